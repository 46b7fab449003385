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
from jssl.methods import base, ema
from jssl.models import Encoder


@dataclasses.dataclass(frozen=True)
class BYOL(base.Method):
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

  @property
  def online(self) -> Encoder:
    return Encoder(self.backbone, self.projector, self.predictor)

  @property
  def target(self) -> Encoder:
    return Encoder(self.backbone, self.projector)

  def input_spec(self):
    shape = (self.image_size, self.image_size, 3)
    return {'view_0': (shape, jnp.float32), 'view_1': (shape, jnp.float32)}

  def init(self, rng, batch):
    x = self.normalize(batch['view_0'][:2])
    variables = self.online.init(rng, x, train=True)
    params, batch_stats = variables['params'], variables['batch_stats']
    copy = lambda t: jax.tree.map(jnp.array, {k: t[k] for k in ('backbone', 'projector')})
    state = {'target_params': copy(params), 'target_batch_stats': copy(batch_stats)}
    return params, batch_stats, state

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

  def features(self, params, batch_stats, images):
    return self.online.apply({'params': params, 'batch_stats': batch_stats},
                             self.normalize(images), train=False, method=Encoder.embed)
