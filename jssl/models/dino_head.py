"""DINO's projection head and SwAV's prototypes layer.

`DINOHead(out_dim, hidden_dim=2048, bottleneck_dim=256, n_layers=3, use_bn=False,
norm_last_layer=True)(x, train) -> [N, out_dim]` (Caron et al., 2021): an MLP
(Dense -> [BN] -> GELU, `n_layers - 1` times, then a Dense to `bottleneck_dim`), L2
normalization, then a weight-normalized bias-free Dense `last_layer` to `out_dim`:
`w[:, k] = g_k v[:, k] / ||v[:, k]||`. With `norm_last_layer` the gain g is fixed to 1 (no
parameter), so every column of the effective weight has unit norm. Params: `dense1..`,
(`bn1..`), `last_layer: {'kernel': v [bottleneck, out_dim] (, 'scale': g [out_dim])}`.
Init as DINO: MLP kernels trunc-normal(0.02), biases 0; v as PyTorch's default Linear
(uniform +-1/sqrt(fan_in)); g = 1.

`Prototypes(n)(z) -> z @ kernel`: SwAV's bias-free linear layer of n prototypes (Caron et al.,
2020), `kernel [D, n]`, one prototype per column; `normalize_prototypes(kernel)` scales every
column to unit L2 norm (SwAV re-normalizes them after each update).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl.models import vit

# PyTorch's nn.Linear default: kaiming_uniform(a=sqrt(5)) = uniform(+-1/sqrt(fan_in)).
torch_linear_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def l2_normalize(x: jax.Array, axis: int = -1) -> jax.Array:
  """`x / max(||x||_2, 1e-12)` along `axis`, in float32."""
  x = jnp.asarray(x, jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=axis, keepdims=True), 1e-12)


def weight_norm(v: jax.Array, g=None) -> jax.Array:
  """The weight-normalized kernel `g * v / ||v||`, norms over the input axis (per column)."""
  w = l2_normalize(v, axis=0)
  return w if g is None else w * jnp.asarray(g, jnp.float32)


def normalize_prototypes(kernel: jax.Array) -> jax.Array:
  """Every prototype (kernel column) scaled to unit L2 norm."""
  return l2_normalize(kernel, axis=0).astype(jnp.asarray(kernel).dtype)


class DINOHead(nn.Module):
  """MLP -> L2 normalize -> weight-normalized Dense (see the module docstring)."""
  out_dim: int = 65536
  hidden_dim: int = 2048
  bottleneck_dim: int = 256
  n_layers: int = 3
  use_bn: bool = False
  norm_last_layer: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    dense = lambda d, name: nn.Dense(d, dtype=self.dtype, name=name,
                                     kernel_init=nn.initializers.truncated_normal(0.02))
    x = jnp.asarray(x, self.dtype)
    n = max(self.n_layers, 1)
    for i in range(n - 1):
      x = dense(self.hidden_dim, f'dense{i + 1}')(x)
      if self.use_bn:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                         dtype=self.dtype, name=f'bn{i + 1}')(x)
      x = vit.gelu(x)
    x = dense(self.bottleneck_dim, f'dense{n}')(x)
    x = l2_normalize(x)
    return WeightNormDense(self.out_dim, self.norm_last_layer, name='last_layer')(x)


class WeightNormDense(nn.Module):
  """Bias-free `x @ (g * v / ||v||)`, in float32; g fixed to 1 when `fixed_gain`."""
  features: int
  fixed_gain: bool = True

  @nn.compact
  def __call__(self, x):
    v = self.param('kernel', torch_linear_init, (jnp.shape(x)[-1], self.features), jnp.float32)
    g = None if self.fixed_gain else self.param('scale', nn.initializers.ones,
                                                (self.features,), jnp.float32)
    return jnp.dot(jnp.asarray(x, jnp.float32), weight_norm(v, g))


class Prototypes(nn.Module):
  """SwAV's prototypes: `z @ kernel` with `kernel [D, n]` (float32 scores)."""
  n: int = 3000

  @nn.compact
  def __call__(self, z):
    kernel = self.param('kernel', torch_linear_init, (jnp.shape(z)[-1], self.n), jnp.float32)
    return jnp.dot(jnp.asarray(z, jnp.float32), kernel)
