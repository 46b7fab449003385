"""MLP heads: SimCLR/BYOL projectors and BYOL's predictor.

`MLP(hidden_dims, out_dim)(x, train)`: for each hidden size, Dense -> BatchNorm -> ReLU; then a
Dense to `out_dim`, followed by a BatchNorm (no ReLU) when `last_bn`. Presets:
- SimCLR v1 / CIFAR (solo-learn): `MLP((2048,), 256)`;
- SimCLR v2 / ImageNet: `MLP((2048, 2048), 128, last_bn=True)` (3 layers, BN on every layer);
- BYOL projector and predictor: `MLP((4096,), 256)`.
Dense layers followed by BN carry no bias (BN's shift replaces it).
"""

from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp


class MLP(nn.Module):
  """Dense-BN-ReLU blocks, then a Dense (and optional BN) output layer."""
  hidden_dims: Sequence[int] = (2048,)
  out_dim: int = 256
  use_bn: bool = True
  last_bn: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    x = jnp.asarray(x, self.dtype)
    for i, dim in enumerate(self.hidden_dims):
      x = nn.Dense(dim, use_bias=not self.use_bn, dtype=self.dtype, name=f'dense{i + 1}')(x)
      if self.use_bn:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, name=f'bn{i + 1}')(x)
      x = nn.relu(x)
    n = len(self.hidden_dims) + 1
    x = nn.Dense(self.out_dim, use_bias=not self.last_bn, dtype=self.dtype, name=f'dense{n}')(x)
    if self.last_bn:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                       dtype=self.dtype, name=f'bn{n}')(x)
    return x
