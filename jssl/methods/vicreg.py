"""VICReg (Bardes, Ponce & LeCun, 2022): variance-invariance-covariance regularization.

- params: `{'backbone', 'projector'}` (the "expander": (Dense-BN-ReLU) x 2, then Dense;
  ImageNet 8192-8192-8192); method_state is empty.
- loss: `losses.vicreg_loss(z1, z2)`: `sim_coeff * mean((z1 - z2)^2) + std_coeff * var_term +
  cov_coeff * cov_term` (25 / 25 / 1). Both views go through the network as one batch of 2N;
  under jit over a sharded batch the variance and covariance span the global batch (the paper
  gathers the embeddings of every device before the loss, which is the same thing).
- metrics: `loss` and the three unweighted terms `invariance`, `variance`, `covariance`.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from jssl import losses
from jssl.methods import base
from jssl.models import Encoder


@dataclasses.dataclass(frozen=True)
class VICReg(base.Method):
  """VICReg with `backbone` and `projector` (the expander) modules."""
  backbone: nn.Module
  projector: nn.Module
  sim_coeff: float = 25.0
  std_coeff: float = 25.0
  cov_coeff: float = 1.0
  image_size: int = 32
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'vicreg'

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

  def embed(self, params, batch_stats, batch):
    """`((z1, z2), new_batch_stats)` of the two views, in training mode."""
    x = self.normalize(jnp.concatenate([batch['view_0'], batch['view_1']], axis=0))
    (_, z, _), updates = self.model.apply({'params': params, 'batch_stats': batch_stats}, x,
                                          train=True, mutable=['batch_stats'])
    return jnp.split(z, 2, axis=0), updates['batch_stats']

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    del rng, step
    (z1, z2), batch_stats = self.embed(params, batch_stats, batch)
    loss, terms = losses.vicreg_loss(z1, z2, sim_coeff=self.sim_coeff, std_coeff=self.std_coeff,
                                     cov_coeff=self.cov_coeff)
    return loss, (batch_stats, method_state, dict(terms, loss=loss))

  def features(self, params, batch_stats, images):
    return self.model.apply({'params': params, 'batch_stats': batch_stats},
                            self.normalize(images), train=False, method=Encoder.embed)
