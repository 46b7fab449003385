"""SimCLR (Chen et al., 2020): two views, backbone + MLP projector, NT-Xent over the global batch.

Both views go through the network as one batch of 2N (as the reference TF implementation does),
so BatchNorm statistics span both views and, under jit over a sharded batch, every device.
The negatives of nt_xent span the global batch for the same reason. `method_state` is empty.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import losses
from jssl.methods import base
from jssl.models import Encoder


@dataclasses.dataclass(frozen=True)
class SimCLR(base.Method):
  """SimCLR with `backbone` (a ResNet) and `projector` (an MLP)."""
  backbone: nn.Module
  projector: nn.Module
  image_size: int = 32
  temperature: float = 0.2
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'simclr'

  @property
  def model(self) -> Encoder:
    return Encoder(self.backbone, self.projector)

  def input_spec(self):
    shape = (self.image_size, self.image_size, 3)
    return {'view_0': (shape, jnp.float32), 'view_1': (shape, jnp.float32)}

  def init(self, rng, batch):
    x = self.normalize(batch['view_0'][:2])
    variables = self.model.init(rng, x, train=True)
    return variables['params'], variables['batch_stats'], {}

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    del rng, step
    x = self.normalize(jnp.concatenate([batch['view_0'], batch['view_1']], axis=0))
    (_, z, _), updates = self.model.apply({'params': params, 'batch_stats': batch_stats}, x,
                                          train=True, mutable=['batch_stats'])
    z1, z2 = jnp.split(z, 2, axis=0)
    loss = losses.nt_xent(z1, z2, temperature=self.temperature)
    return loss, (updates['batch_stats'], method_state, {'loss': loss})

  def features(self, params, batch_stats, images):
    return self.model.apply({'params': params, 'batch_stats': batch_stats},
                            self.normalize(images), train=False, method=Encoder.embed)
