"""The one model builder: `config.model` -> a Flax module, and the one image-size rule.

`from_config(model_cfg, use_mask_token=False)` builds, by `model_cfg.name`:
- a ResNet (`jssl.models.resnet.STAGES` names): width, stem, stage_sizes (() = the name's),
  dtype, remat (default False: recompute each block in the backward pass, for memory),
  conv_weight_grad ('auto': jssl.models.conv's per-tap kernel gradient on CPU, XLA's
  elsewhere; 'xla'; 'per_tap');
- a ViT ('vit_*', jssl.models.vit.VIT_CONFIGS): patch_size, width / depth / num_heads (0: the
  name's), pool, class_token (default True), drop_path_rate, layerscale_init (0: none),
  num_registers (0: none), dtype, remat (as the ResNet's),
  attention_impl ('': XLA, 'cudnn'); `use_mask_token` for the masked-modeling methods (SimMIM, BEiT);
- the dVAE tokenizer ('dvae'): vocab_size, hidden, num_down, blocks, dtype, conv_weight_grad.
Every key it reads is listed here; `mean` / `std` (input normalization) are the methods'.

`dtype_of(model_cfg)`: the compute dtype (`DTYPES`, params stay float32).
`image_size(config)`: the training view size: `data.augment.image_size`, else the multi-crop
recipe's `data.augment.global_size`, else `data.image_size`.
"""

import jax
import jax.numpy as jnp

from jssl.models import conv, dvae, resnet, vit

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def dtype_of(model_cfg):
  if model_cfg.dtype not in DTYPES:
    raise ValueError(f'config.model.dtype must be one of {sorted(DTYPES)}, got {model_cfg.dtype!r}')
  return DTYPES[model_cfg.dtype]


def _conv(model_cfg):
  return conv.for_backend(model_cfg.get('conv_weight_grad', 'auto'), jax.default_backend())


def from_config(model_cfg, use_mask_token: bool = False):
  """The module named by `model_cfg.name` (see the module docstring)."""
  name, dtype = str(model_cfg.name), dtype_of(model_cfg)
  if name.startswith('vit'):
    arch = vit.vit_config(name)
    for key in ('width', 'depth', 'num_heads'):
      if model_cfg.get(key, 0):
        arch[key] = int(model_cfg[key])
    return vit.ViT(**arch, patch_size=int(model_cfg.get('patch_size', 16)),
                   pool=model_cfg.get('pool', 'cls'),
                   class_token=bool(model_cfg.get('class_token', True)),
                   use_mask_token=use_mask_token,
                   drop_path_rate=float(model_cfg.get('drop_path_rate', 0.0)),
                   layerscale_init=model_cfg.get('layerscale_init', 0.0) or None,
                   num_registers=int(model_cfg.get('num_registers', 0)), dtype=dtype,
                   attention_impl=model_cfg.get('attention_impl', '') or None,
                   remat=bool(model_cfg.get('remat', False)))
  if name == 'dvae':
    return dvae.DVAE(vocab_size=int(model_cfg.vocab_size), hidden=int(model_cfg.hidden),
                     num_down=int(model_cfg.num_down), blocks=int(model_cfg.blocks),
                     dtype=dtype, conv_general_dilated=_conv(model_cfg))
  return resnet.resnet(name, width=model_cfg.width, stem=model_cfg.stem,
                       stage_sizes=tuple(model_cfg.get('stage_sizes', ()) or ()), dtype=dtype,
                       conv_general_dilated=_conv(model_cfg),
                       remat=bool(model_cfg.get('remat', False)))


def image_size(config) -> int:
  """The training view size of a config (see the module docstring); 32 without a data block."""
  data = config.get('data', None)
  if data is None:
    return 32
  augment = data.get('augment', None) or {}
  return int(augment.get('image_size', None) or augment.get('global_size', None)
             or data.get('image_size', None) or 32)
