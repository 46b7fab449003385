"""jssl.models: Flax (linen) backbones and heads. Nothing here knows of data, methods or training.

- `resnet(name, width=, stem=, stage_sizes=, dtype=)` -> `ResNet`, called as
  `model.apply(variables, images, train)` -> `[N, F]` pooled features (`feature_dim(model)` = F).
- `MLP(hidden_dims, out_dim, use_bn=, last_bn=)`: projectors and predictors.
- `Encoder(backbone, projector, predictor=None)` -> `(h, z, p)`; `Encoder.embed` -> h.
- `from_config(model_cfg, use_mask_token=False)`: the ResNet, ViT or dVAE named by a
  `config.model` block; `image_size(config)`: the training view size; `DTYPES`, `dtype_of`
  (all from `jssl.models.build`, the one place that reads `config.model`).
- `load_backbone(path) -> (module, variables, info)`: a backbone written by `python -m
  jssl.export` (safetensors or msgpack, see `jssl.models.export`).
"""

from jssl.models.build import DTYPES, dtype_of, from_config, image_size
from jssl.models.encoder import Encoder
from jssl.models.export import load_backbone
from jssl.models.heads import MLP
from jssl.models.resnet import STAGES, ResNet, feature_dim, resnet

__all__ = ['Encoder', 'MLP', 'ResNet', 'STAGES', 'DTYPES', 'dtype_of', 'feature_dim', 'resnet',
           'from_config', 'image_size', 'load_backbone']
