"""jssl.methods: one file per SSL method, behind the interface of `jssl.methods.base.Method`.

`build(config, total_steps) -> Method` builds the method named by `config.method.name` from the
config's `method` and `model` blocks (and the view size `config.data.augment.image_size`) (a plain ConfigDict: values, no flags).
`REGISTRY` maps names to builders; add a method by adding one file and one entry.
"""

from jssl import models
from jssl.methods.base import CIFAR10_MEAN, CIFAR10_STD, Method
from jssl.methods.byol import BYOL
from jssl.methods import barlow_twins as _barlow_lib, nnclr as _nnclr_lib
from jssl.methods import simsiam as _simsiam_lib, vicreg as _vicreg_lib
from jssl.methods import mae as _mae_lib, simmim as _simmim_lib
from jssl.methods import beit as _beit_lib, dvae as _dvae_lib
from jssl.methods import moco_v2 as _moco_v2_lib, moco_v3 as _moco_v3_lib
from jssl.methods import mean_shift as _mean_shift_lib
from jssl.methods.simclr import SimCLR
from jssl.methods import dino as _dino_lib, swav as _swav_lib


def _common(config):
  """Backbone, input size and normalization shared by the methods, from config.model / data."""
  dtype = models.DTYPES.get(config.model.dtype)
  model = config.model
  data = config.get('data', None)
  augment = data.get('augment', None) if data is not None else None
  image_size = int((augment and augment.get('image_size', None)) or
                   (data and data.get('image_size', None)) or 32)
  return dict(backbone=models.from_config(model), image_size=image_size,
              mean=tuple(model.get('mean', None) or CIFAR10_MEAN),
              std=tuple(model.get('std', None) or CIFAR10_STD)), dtype


def _mlp(hidden, out, last_bn, dtype):
  return models.MLP(hidden_dims=tuple(hidden), out_dim=out, last_bn=last_bn, dtype=dtype)


def _simclr(config, total_steps):
  del total_steps
  kw, dtype = _common(config)
  m = config.method
  return SimCLR(projector=_mlp(m.proj_hidden_dims, m.proj_dim, m.proj_last_bn, dtype),
                temperature=m.temperature, **kw)


def _byol(config, total_steps):
  kw, dtype = _common(config)
  m = config.method
  return BYOL(projector=_mlp(m.proj_hidden_dims, m.proj_dim, m.proj_last_bn, dtype),
              predictor=_mlp(m.pred_hidden_dims, m.proj_dim, False, dtype),
              total_steps=int(total_steps), tau_base=m.tau_base, **kw)


def _mae(config, total_steps):
  return _mae_lib.from_config(config, total_steps)


def _simmim(config, total_steps):
  return _simmim_lib.from_config(config, total_steps)


def _dvae(config, total_steps):
  return _dvae_lib.from_config(config, total_steps)


def _beit(config, total_steps):
  return _beit_lib.from_config(config, total_steps)


def _dino(config, total_steps):
  return _dino_lib.build_dino(config, total_steps)


def _swav(config, total_steps):
  return _swav_lib.build_swav(config, total_steps)


def _simsiam(config, total_steps):
  del total_steps
  kw, dtype = _common(config)
  m = config.method
  return _simsiam_lib.SimSiam(
      projector=_simsiam_lib.Projector(tuple(m.proj_hidden_dims), m.proj_dim, dtype),
      predictor=_mlp(m.pred_hidden_dims, m.proj_dim, False, dtype), fix_pred_lr=m.fix_pred_lr,
      **kw)


def _vicreg(config, total_steps):
  del total_steps
  kw, dtype = _common(config)
  m = config.method
  return _vicreg_lib.VICReg(projector=_mlp(m.proj_hidden_dims, m.proj_dim, False, dtype),
                            sim_coeff=m.sim_coeff, std_coeff=m.std_coeff, cov_coeff=m.cov_coeff,
                            **kw)


def _barlow_twins(config, total_steps):
  del total_steps
  kw, dtype = _common(config)
  m = config.method
  return _barlow_lib.BarlowTwins(projector=_mlp(m.proj_hidden_dims, m.proj_dim, False, dtype),
                                 lambd=m.lambd, scale_loss=m.scale_loss,
                                 bias_lr_mult=m.bias_lr_mult, **kw)


def _nnclr(config, total_steps):
  del total_steps
  kw, dtype = _common(config)
  m = config.method
  return _nnclr_lib.NNCLR(projector=_mlp(m.proj_hidden_dims, m.proj_dim, m.proj_last_bn, dtype),
                          predictor=_mlp(m.pred_hidden_dims, m.proj_dim, False, dtype),
                          proj_dim=m.proj_dim, support_size=m.support_size,
                          temperature=m.temperature, **kw)


def _moco_v2(config, total_steps):
  kw, dtype = _common(config)
  m = config.method
  return _moco_v2_lib.MoCoV2(
      projector=models.MLP(tuple(m.proj_hidden_dims), m.proj_dim, use_bn=m.proj_use_bn,
                           dtype=dtype),
      proj_dim=m.proj_dim, queue_size=m.queue_size, temperature=m.temperature,
      symmetric=m.symmetric, total_steps=int(total_steps), tau_base=m.tau_base,
      tau_final=m.tau_final, bn_groups=m.bn_groups, shuffle_bn=m.shuffle_bn, **kw)


def _moco_v3(config, total_steps):
  return _moco_v3_lib.from_config(config, total_steps)


def _mean_shift(config, total_steps):
  kw, dtype = _common(config)
  m = config.method
  return _mean_shift_lib.MeanShift(
      projector=_mlp(m.proj_hidden_dims, m.proj_dim, False, dtype),
      predictor=_mlp(m.pred_hidden_dims, m.proj_dim, False, dtype), proj_dim=m.proj_dim,
      bank_size=m.bank_size, k=m.k, symmetric=m.symmetric, total_steps=int(total_steps),
      tau_base=m.tau_base, tau_final=m.tau_final, bn_groups=m.bn_groups,
      shuffle_bn=m.shuffle_bn, **kw)


REGISTRY = {'simclr': _simclr, 'byol': _byol, 'mae': _mae, 'simmim': _simmim,
            'simsiam': _simsiam, 'vicreg': _vicreg, 'barlow_twins': _barlow_twins,
            'nnclr': _nnclr, 'moco_v2': _moco_v2, 'moco_v3': _moco_v3,
            'mean_shift': _mean_shift, 'dino': _dino, 'swav': _swav, 'dvae': _dvae,
            'beit': _beit}


def build(config, total_steps: int, steps_per_epoch: int = 0) -> Method:
  """The method of `config.method.name`, for a run of `total_steps` steps.

  `steps_per_epoch`: the engine's (training examples // batch size) when `config.steps_per_epoch`
  is 0; methods with schedules in epochs (DINO, SwAV) read it. Without either they take
  total_steps / total_epochs.
  """
  name = config.method.name
  if name not in REGISTRY:
    raise ValueError(f'unknown config.method.name {name!r}; choose one of {sorted(REGISTRY)}')
  if steps_per_epoch and not config.get('steps_per_epoch', 0):
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.steps_per_epoch = int(steps_per_epoch)
  return REGISTRY[name](config, total_steps)


__all__ = ['Method', 'SimCLR', 'BYOL', 'REGISTRY', 'build']
