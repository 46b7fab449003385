"""Mean Shift, MSF (Koohpayegani, Tejankar & Pirsiavash, 2021): BYOL with the target's neighbours.

An online encoder (backbone + projector + predictor, 4096-512 heads in the paper), a target
encoder (backbone + projector, EMA of the online one) and a memory bank of past normalized
target embeddings. With `p_i` the online prediction of the strong view and `z_i` the target
embedding of the weak view, `NN_k(i)` the k nearest of `{z_i} ∪ bank` to `z_i` (z_i itself
first), `loss = mean_i mean_{c in NN_k(i)} ||normalize(p_i) - c||^2` (losses.mean_shift_loss);
with k = 1 it is BYOL's loss. The batch's normalized targets then replace the oldest bank rows.

- views: `view_0` is the online (strong) view, `view_1` the target (weak) view (the paper's
  weak/strong pair: the weak view is a crop and flip only; the recipe is the data pipeline's).
- params: `{'backbone', 'projector', 'predictor'}`; batch_stats: their BatchNorm statistics.
- method_state: `{'target_params': {'backbone', 'projector'}, 'target_batch_stats', 'bank'}`;
  `bank` is an `ema.queue_*` queue of `bank_size` rows, started full of random unit vectors (as
  MSF's code does).
- `symmetric=False` (the paper): `mean_shift_loss(p(view_0), z(view_1), bank, k)`, z(view_1)
  pushed. `symmetric=True`: both views through each network as one batch of 2N (BYOL's layout),
  `msl(p0, z1, bank, k) + msl(p1, z0, bank, k)` (a sum, as BYOL's L + L~), z0 and z1 pushed.
- target update after each optimizer step: `target = m * target + (1 - m) * online`,
  `m = momentum.momentum_at(step, total_steps, tau_base, tau_final)` (the paper: 0.99 constant).
- BatchNorm in `bn_groups` groups, the target's computed on a shuffled batch (MSF's code shuffles
  the target batch under DataParallel: Shuffle BN), as MoCo v2 here (momentum.grouped_apply).
- Deviation from MSF's code: the code pushes the batch's targets before the neighbour search, so
  its candidates are the bank after the push (which holds z_i and the batch's other targets);
  here (jssl's mean_shift_loss) they are z_i and the bank before the push.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import losses
from jssl.methods import base, ema, momentum, two_view
from jssl.methods.moco_v2 import random_queue


@dataclasses.dataclass(frozen=True)
class MeanShift(two_view.TwoViewMethod):
  """MeanShift with `backbone`, `projector` and `predictor` modules and a memory bank."""
  backbone: nn.Module
  projector: nn.Module
  predictor: nn.Module
  proj_dim: int = 512
  bank_size: int = 1_024_000
  k: int = 5
  symmetric: bool = False
  total_steps: int = 1000
  tau_base: float = 0.99
  tau_final: float = 0.99
  bn_groups: int = 1
  shuffle_bn: bool = True
  image_size: int = 32
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'mean_shift'

  def init(self, rng, batch):
    rng, bank_rng = jax.random.split(rng)
    variables = self.online.init(rng, self.normalize(batch['view_0'][:2]), train=True)
    params, batch_stats = variables['params'], variables['batch_stats']
    state = dict(two_view.target_copy(params, batch_stats),
                 bank=random_queue(bank_rng, self.bank_size, self.proj_dim))
    return params, batch_stats, state

  def momentum(self, step):
    return momentum.momentum_at(step, self.total_steps, self.tau_base, self.tau_final)

  def embed(self, params, batch_stats, method_state, batch, rng):
    """`(p [N', D], z [N', D] normalized, new_batch_stats, new_target_batch_stats)`; N' = N
    (online on view_0, target on view_1) or 2N (symmetric: both views, view_0 first)."""
    v0, v1 = self.normalize(batch['view_0']), self.normalize(batch['view_1'])
    if self.symmetric:
      xo = xt = jnp.concatenate([v0, v1])[None]
    else:
      xo, xt = v0[None], v1[None]
    perm = None
    if self.shuffle_bn and self.bn_groups > 1:
      if rng is None:
        raise ValueError('MeanShift with Shuffle BN (bn_groups > 1) needs an rng in loss_fn')
      perm = momentum.shuffle(rng, xt.shape[1])

    def run(model, variables, out, x, perm=None):
      def fn(xg):
        outs, upd = model.apply(variables, xg, train=True, mutable=['batch_stats'])
        return outs[out], upd['batch_stats']
      y, stats = momentum.grouped_apply(fn, x, self.bn_groups, perm)
      return y[0], stats

    p, stats = run(self.online, {'params': params, 'batch_stats': batch_stats}, 2, xo)
    z, t_stats = run(self.target, {'params': method_state['target_params'],
                                   'batch_stats': method_state['target_batch_stats']}, 1, xt,
                     perm)
    return p, jax.lax.stop_gradient(losses.normalize(z)), stats, t_stats

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    p, z, batch_stats, t_stats = self.embed(params, batch_stats, method_state, batch, rng)
    bank = method_state['bank']
    if self.symmetric:
      p0, p1 = jnp.split(p, 2)
      z0, z1 = jnp.split(z, 2)
      loss = (losses.mean_shift_loss(p0, z1, bank['items'], k=self.k) +
              losses.mean_shift_loss(p1, z0, bank['items'], k=self.k))
    else:
      loss = losses.mean_shift_loss(p, z, bank['items'], k=self.k)
    new_state = dict(method_state, target_batch_stats=t_stats, bank=ema.queue_push(bank, z))
    return loss, (batch_stats, new_state, {'loss': loss, 'tau': self.momentum(step)})

  def update_state(self, old_params, params, method_state, step):
    del old_params
    online = {k: params[k] for k in ('backbone', 'projector')}
    target = ema.ema_update(method_state['target_params'], online, self.momentum(step))
    return params, dict(method_state, target_params=target)


def from_config(config, total_steps: int) -> MeanShift:
  """MeanShift from `config.method`: proj_hidden_dims, proj_dim, pred_hidden_dims, bank_size,
  k, symmetric, tau_base, tau_final, bn_groups, shuffle_bn."""
  m = config.method
  return MeanShift(
      projector=two_view.mlp(config, m.proj_hidden_dims, m.proj_dim),
      predictor=two_view.mlp(config, m.pred_hidden_dims, m.proj_dim), proj_dim=int(m.proj_dim),
      bank_size=int(m.bank_size), k=int(m.k), symmetric=bool(m.symmetric),
      total_steps=int(total_steps), tau_base=float(m.tau_base), tau_final=float(m.tau_final),
      bn_groups=int(m.bn_groups), shuffle_bn=bool(m.shuffle_bn), **two_view.common_kwargs(config))
