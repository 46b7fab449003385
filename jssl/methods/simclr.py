"""SimCLR (Chen et al., 2020): two views, backbone + MLP projector, NT-Xent over the global batch.

Both views go through the network as one batch of 2N (as the reference TF implementation does),
so BatchNorm statistics span both views and, under jit over a sharded batch, every device.
The negatives of nt_xent span the global batch for the same reason. `method_state` is empty.
"""

import dataclasses

import flax.linen as nn

from jssl import losses
from jssl.methods import base, two_view


@dataclasses.dataclass(frozen=True)
class SimCLR(two_view.TwoViewMethod):
  """SimCLR with `backbone` (a ResNet) and `projector` (an MLP)."""
  backbone: nn.Module
  projector: nn.Module
  image_size: int = 32
  temperature: float = 0.2
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'simclr'

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    del rng, step
    (z1, z2), _, batch_stats = self.embed(params, batch_stats, batch)
    loss = losses.nt_xent(z1, z2, temperature=self.temperature)
    return loss, (batch_stats, method_state, {'loss': loss})


def from_config(config, total_steps: int) -> SimCLR:
  """SimCLR from `config.method`: proj_hidden_dims, proj_dim, proj_last_bn, temperature."""
  del total_steps
  m = config.method
  return SimCLR(projector=two_view.mlp(config, m.proj_hidden_dims, m.proj_dim, m.proj_last_bn),
                temperature=float(m.temperature), **two_view.common_kwargs(config))
