"""BYOL (Grill et al., 2020): online backbone + projector + predictor, EMA target, no negatives.

- params: the online network `{'backbone', 'projector', 'predictor'}`.
- method_state: `{'target_params': {'backbone', 'projector'}, 'target_batch_stats': ...}`,
  initialised as a copy of the online network.
- loss: symmetrized `byol_loss(p1, sg(z2')) + byol_loss(p2, sg(z1'))` (the paper's L + L~).
- after each optimizer step the target becomes `tau_k * target + (1 - tau_k) * online` with
  `tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2`, k the 0-based step just taken, K the
  total number of steps (ema.cosine_momentum).
- BatchNorm: both views pass through each network as one batch of 2N, in training mode, so the
  target normalizes with the current batch's statistics, as BYOL does. The target's running
  statistics are its own running averages from those forward passes (not EMA'd from the online
  network); nothing uses them during training.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import losses
from jssl.methods import base, ema, two_view


@dataclasses.dataclass(frozen=True)
class BYOL(two_view.TwoViewMethod):
  """BYOL with `backbone`, `projector` and `predictor` modules."""
  backbone: nn.Module
  projector: nn.Module
  predictor: nn.Module
  total_steps: int = 1000
  image_size: int = 32
  tau_base: float = 0.99
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'byol'

  def init_state(self, params, batch_stats):
    return two_view.target_copy(params, batch_stats)

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    del rng
    x = self.normalize(jnp.concatenate([batch['view_0'], batch['view_1']], axis=0))
    (_, _, p), updates = self.online.apply({'params': params, 'batch_stats': batch_stats}, x,
                                           train=True, mutable=['batch_stats'])
    (_, zt, _), t_updates = self.target.apply(
        {'params': method_state['target_params'],
         'batch_stats': method_state['target_batch_stats']}, x, train=True,
        mutable=['batch_stats'])
    zt = jax.lax.stop_gradient(zt)
    p1, p2 = jnp.split(p, 2, axis=0)
    z1, z2 = jnp.split(zt, 2, axis=0)
    loss = losses.byol_loss(p1, z2) + losses.byol_loss(p2, z1)
    new_state = dict(method_state, target_batch_stats=t_updates['batch_stats'])
    tau = ema.cosine_momentum(step, self.total_steps, self.tau_base)
    return loss, (updates['batch_stats'], new_state, {'loss': loss, 'tau': tau})

  def update_state(self, old_params, params, method_state, step):
    del old_params
    tau = ema.cosine_momentum(step, self.total_steps, self.tau_base)
    online = {k: params[k] for k in ('backbone', 'projector')}
    target = ema.ema_update(method_state['target_params'], online, tau)
    return params, dict(method_state, target_params=target)


def from_config(config, total_steps: int) -> BYOL:
  """BYOL from `config.method`: proj_hidden_dims, proj_dim, proj_last_bn, pred_hidden_dims,
  tau_base."""
  m = config.method
  return BYOL(projector=two_view.mlp(config, m.proj_hidden_dims, m.proj_dim, m.proj_last_bn),
              predictor=two_view.mlp(config, m.pred_hidden_dims, m.proj_dim),
              total_steps=int(total_steps), tau_base=float(m.tau_base),
              **two_view.common_kwargs(config))
