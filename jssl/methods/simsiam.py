"""SimSiam (Chen & He, 2021): a siamese network with a predictor and a stop-gradient, no negatives.

- params: `{'backbone', 'projector', 'predictor'}` (one network for both views); method_state
  is empty.
- projector: (Dense-BN-ReLU) x len(hidden_dims), then Dense -> BatchNorm *without* affine
  parameters (`Projector`; ImageNet: 2048-2048-2048); predictor: the 2-layer bottleneck
  `MLP((512,), 2048)` (Dense-BN-ReLU, Dense).
- loss: `D(p1, z2) / 2 + D(p2, z1) / 2` with `D(p, z) = -cos(p, sg(z))` (losses.simsiam_loss).
  Both views go through the network as one batch of 2N (BatchNorm statistics over both views).
- metrics: `z_std`, the mean over dimensions of the std of normalized z (the paper's collapse
  monitor: ~1/sqrt(d) when healthy, 0 when collapsed).
- `optim_groups()`: with `fix_pred_lr` the predictor keeps the peak learning rate (no warm-up, no
  decay), as in the paper. The engine reads it through jssl.train.param_groups (see there).
"""

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import losses, models
from jssl.methods import base, two_view


class Projector(nn.Module):
  """Dense-BN-ReLU blocks, then Dense (no bias) -> BatchNorm with no scale and no shift."""
  hidden_dims: Sequence[int] = (2048, 2048)
  out_dim: int = 2048
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = True):
    bn = lambda name, affine=True: nn.BatchNorm(
        use_running_average=not train, momentum=0.9, epsilon=1e-5, use_scale=affine,
        use_bias=affine, dtype=self.dtype, name=name)
    x = jnp.asarray(x, self.dtype)
    for i, dim in enumerate(self.hidden_dims):
      x = nn.Dense(dim, use_bias=False, dtype=self.dtype, name=f'dense{i + 1}')(x)
      x = nn.relu(bn(f'bn{i + 1}')(x))
    n = len(self.hidden_dims) + 1
    x = nn.Dense(self.out_dim, use_bias=False, dtype=self.dtype, name=f'dense{n}')(x)
    return bn(f'bn{n}', affine=False)(x)


def embedding_std(z: jax.Array) -> jax.Array:
  """Mean over dimensions of the per-dimension std of the L2-normalized rows of z."""
  return jnp.mean(jnp.std(losses.normalize(jnp.asarray(z, jnp.float32)), axis=0))


@dataclasses.dataclass(frozen=True)
class SimSiam(two_view.TwoViewMethod):
  """SimSiam with `backbone`, `projector` and `predictor` modules."""
  backbone: nn.Module
  projector: nn.Module
  predictor: nn.Module
  fix_pred_lr: bool = True
  image_size: int = 32
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'simsiam'

  def optim_groups(self):
    """Parameter groups with their own learning rate (jssl.train.param_groups)."""
    if not self.fix_pred_lr:
      return ()
    return ({'name': 'predictor', 'select': 'predictor', 'lr_mult': 1.0,
             'schedule': 'constant'},)

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    del rng, step
    (z1, z2), (p1, p2), batch_stats = self.embed(params, batch_stats, batch)
    loss = losses.simsiam_loss(p1, z2) / 2 + losses.simsiam_loss(p2, z1) / 2
    z_std = (embedding_std(z1) + embedding_std(z2)) / 2
    return loss, (batch_stats, method_state, {'loss': loss, 'z_std': z_std})


def from_config(config, total_steps: int) -> SimSiam:
  """SimSiam from `config.method`: proj_hidden_dims, proj_dim, pred_hidden_dims, fix_pred_lr."""
  del total_steps
  m = config.method
  return SimSiam(
      projector=Projector(tuple(m.proj_hidden_dims), m.proj_dim, models.dtype_of(config.model)),
      predictor=two_view.mlp(config, m.pred_hidden_dims, m.proj_dim),
      fix_pred_lr=bool(m.fix_pred_lr), **two_view.common_kwargs(config))
