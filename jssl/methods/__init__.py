"""jssl.methods: one file per SSL method, behind the interface of `jssl.methods.base.Method`.

`build(config, total_steps) -> Method` builds the method named by `config.method.name` from the
config's `method` and `model` blocks (and the view size `config.data.augment.image_size`) (a plain ConfigDict: values, no flags).
`REGISTRY` maps names to builders; add a method by adding one file and one entry.
"""

from jssl import models
from jssl.methods.base import CIFAR10_MEAN, CIFAR10_STD, Method
from jssl.methods.byol import BYOL
from jssl.methods.simclr import SimCLR


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


REGISTRY = {'simclr': _simclr, 'byol': _byol}


def build(config, total_steps: int) -> Method:
  """The method of `config.method.name`, for a run of `total_steps` steps."""
  name = config.method.name
  if name not in REGISTRY:
    raise ValueError(f'unknown config.method.name {name!r}; choose one of {sorted(REGISTRY)}')
  return REGISTRY[name](config, total_steps)


__all__ = ['Method', 'SimCLR', 'BYOL', 'REGISTRY', 'build']
