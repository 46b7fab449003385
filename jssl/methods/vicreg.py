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

from jssl import losses
from jssl.methods import base, two_view


@dataclasses.dataclass(frozen=True)
class VICReg(two_view.TwoViewMethod):
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

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    del rng, step
    (z1, z2), _, batch_stats = self.embed(params, batch_stats, batch)
    loss, terms = losses.vicreg_loss(z1, z2, sim_coeff=self.sim_coeff, std_coeff=self.std_coeff,
                                     cov_coeff=self.cov_coeff)
    return loss, (batch_stats, method_state, dict(terms, loss=loss))


def from_config(config, total_steps: int) -> VICReg:
  """VICReg from `config.method`: proj_hidden_dims, proj_dim, sim_coeff, std_coeff, cov_coeff."""
  del total_steps
  m = config.method
  return VICReg(projector=two_view.mlp(config, m.proj_hidden_dims, m.proj_dim),
                sim_coeff=float(m.sim_coeff), std_coeff=float(m.std_coeff),
                cov_coeff=float(m.cov_coeff), **two_view.common_kwargs(config))
