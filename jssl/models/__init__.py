"""jssl.models: Flax (linen) backbones and heads. Nothing here knows of data, methods or training.

- `resnet(name, width=, stem=, stage_sizes=, dtype=)` -> `ResNet`, called as
  `model.apply(variables, images, train)` -> `[N, F]` pooled features (`feature_dim(model)` = F).
- `MLP(hidden_dims, out_dim, use_bn=, last_bn=)`: projectors and predictors.
- `Encoder(backbone, projector, predictor=None)` -> `(h, z, p)`; `Encoder.embed` -> h.
- `from_config(model_cfg)`: the backbone named by a `config.model` block (name, width, stem,
  stage_sizes, dtype, conv_weight_grad: 'auto' | 'xla' | 'per_tap', see `jssl.models.conv`).
"""

import jax
import jax.numpy as jnp

from jssl.models import conv
from jssl.models.encoder import Encoder
from jssl.models.heads import MLP
from jssl.models.resnet import STAGES, ResNet, feature_dim, resnet

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def from_config(model_cfg) -> ResNet:
  """The backbone described by a `config.model` block."""
  if model_cfg.dtype not in DTYPES:
    raise ValueError(f'config.model.dtype must be one of {sorted(DTYPES)}, got {model_cfg.dtype!r}')
  conv_fn = conv.for_backend(model_cfg.get('conv_weight_grad', 'auto'), jax.default_backend())
  return resnet(model_cfg.name, width=model_cfg.width, stem=model_cfg.stem,
                stage_sizes=tuple(model_cfg.get('stage_sizes', ()) or ()),
                dtype=DTYPES[model_cfg.dtype], conv_general_dilated=conv_fn)


__all__ = ['Encoder', 'MLP', 'ResNet', 'STAGES', 'DTYPES', 'feature_dim', 'resnet', 'from_config']
