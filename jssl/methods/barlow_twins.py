"""Barlow Twins (Zbontar et al., 2021): the cross-correlation of the two views' embeddings -> I.

- params: `{'backbone', 'projector'}` ((Dense-BN-ReLU) x 2, then Dense; ImageNet
  8192-8192-8192); method_state is empty.
- loss: `scale_loss * losses.barlow_twins_loss(z1, z2, lambd)`: each branch standardized over
  the (global) batch, `c = z1n^T z2n / N`, `sum_i (1 - c_ii)^2 + lambd * sum_{i != j} c_ij^2`
  (lambd 0.0051; solo-learn scales the loss by 0.1 on CIFAR, the paper by 1). Both views go
  through the network as one batch of 2N.
- `optim_groups()`: the paper trains biases and BatchNorm parameters with a learning rate
  `bias_lr_mult` (0.0048 / 0.2 = 0.024) times that of the weights; the engine reads it through
  jssl.train.param_groups.
"""

import dataclasses

import flax.linen as nn

from jssl import losses
from jssl.methods import base, two_view


@dataclasses.dataclass(frozen=True)
class BarlowTwins(two_view.TwoViewMethod):
  """Barlow Twins with `backbone` and `projector` modules."""
  backbone: nn.Module
  projector: nn.Module
  lambd: float = 0.0051
  scale_loss: float = 1.0
  bias_lr_mult: float = 1.0
  image_size: int = 32
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'barlow_twins'

  def optim_groups(self):
    """Parameter groups with their own learning rate (jssl.train.param_groups)."""
    if self.bias_lr_mult == 1.0:
      return ()
    return ({'name': 'bias_and_norm', 'select': 'bias_and_norm', 'lr_mult': self.bias_lr_mult,
             'schedule': 'same'},)

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    del rng, step
    (z1, z2), _, batch_stats = self.embed(params, batch_stats, batch)
    bt = losses.barlow_twins_loss(z1, z2, lambd=self.lambd)
    loss = self.scale_loss * bt
    return loss, (batch_stats, method_state, {'loss': loss, 'barlow_twins': bt})


def from_config(config, total_steps: int) -> BarlowTwins:
  """Barlow Twins from `config.method`: proj_hidden_dims, proj_dim, lambd, scale_loss,
  bias_lr_mult."""
  del total_steps
  m = config.method
  return BarlowTwins(projector=two_view.mlp(config, m.proj_hidden_dims, m.proj_dim),
                     lambd=float(m.lambd), scale_loss=float(m.scale_loss),
                     bias_lr_mult=float(m.bias_lr_mult), **two_view.common_kwargs(config))
