"""MoCo v2 (He et al., 2020; Chen, Fan, Girshick & He, 2020, "Improved baselines").

A query encoder f_q (backbone + MLP head, 2048-128 without BatchNorm) trained by the optimizer, a
key encoder f_k = EMA of f_q, and a FIFO queue of past normalized keys as negatives:
`loss = moco_loss(q, sg(k), queue, T)` (losses.moco_loss:
`-log exp(q.k/T) / (exp(q.k/T) + sum_m exp(q.n_m/T))` on normalized vectors), then the batch's
normalized keys replace the oldest queue rows.

- params: f_q `{'backbone', 'projector'}`; batch_stats: f_q's BatchNorm statistics.
- method_state: `{'key_params', 'key_batch_stats', 'queue_1'[, 'queue_0']}`; `queue_v` is an
  `ema.queue_*` queue of the past normalized keys of view v, started full of random unit vectors
  (as MoCo and solo-learn do), so all its rows are negatives from the first step.
- `symmetric=True` (the default; solo-learn's mocov2plus): `(moco_loss(q0, k1, queue_1) +
  moco_loss(q1, k0, queue_0)) / 2`, each view's keys pushed into its own queue.
  `symmetric=False` (the paper): `moco_loss(q0, k1, queue_1)`, only view 1's keys pushed.
- key encoder update after each optimizer step: `key = m * key + (1 - m) * f_q` with
  `m = momentum.momentum_at(step, total_steps, tau_base, tau_final)` (the paper: 0.999 constant,
  `tau_final = tau_base`; solo-learn at CIFAR: cosine 0.99 -> 0.999). MoCo updates the key
  encoder just before computing the keys with the current f_q; updating it right after the
  previous optimizer step is the same sequence.
- BatchNorm: each view goes through each encoder as its own batch (separate forward passes, as
  in MoCo and solo-learn), cut into `bn_groups` BatchNorm groups (momentum.grouped_apply): the
  query encoder's group g is the view's contiguous block g, the key encoder's is a random subset
  (a fresh permutation of the batch drawn from `rng` each step, undone after): Shuffle BN,
  emulated on the global batch, so it does not depend on the device count (see
  jssl/methods/momentum.py). `bn_groups=1` is global BN per view (solo-learn's SyncBN).
- features: f_q's backbone in inference mode.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import losses, models
from jssl.methods import base, ema, momentum, two_view
from jssl.models import Encoder


def random_queue(rng, size: int, dim: int) -> dict:
  """A full `ema` queue of `size` random unit vectors of `dim`."""
  return ema.queue_init(size, dim, items=losses.normalize(jax.random.normal(rng, (size, dim))))


@dataclasses.dataclass(frozen=True)
class MoCoV2(base.Method):
  """MoCo v2 with a `backbone` and a `projector` (the MLP head)."""
  backbone: nn.Module
  projector: nn.Module
  proj_dim: int = 128
  queue_size: int = 65536
  temperature: float = 0.2
  symmetric: bool = True
  total_steps: int = 1000
  tau_base: float = 0.999
  tau_final: float = 0.999
  bn_groups: int = 1
  shuffle_bn: bool = True
  image_size: int = 32
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'moco_v2'

  @property
  def model(self) -> Encoder:
    return Encoder(self.backbone, self.projector)

  def input_spec(self):
    shape = (self.image_size, self.image_size, 3)
    return {'view_0': (shape, jnp.float32), 'view_1': (shape, jnp.float32)}

  def init(self, rng, batch):
    rng, q0, q1 = jax.random.split(rng, 3)
    variables = self.model.init(rng, self.normalize(batch['view_0'][:2]), train=True)
    params, batch_stats = variables['params'], variables['batch_stats']
    copy = lambda t: jax.tree.map(jnp.array, t)
    state = {'key_params': copy(params), 'key_batch_stats': copy(batch_stats),
             'queue_1': random_queue(q1, self.queue_size, self.proj_dim)}
    if self.symmetric:
      state['queue_0'] = random_queue(q0, self.queue_size, self.proj_dim)
    return params, batch_stats, state

  def momentum(self, step):
    return momentum.momentum_at(step, self.total_steps, self.tau_base, self.tau_final)

  def encode(self, params, batch_stats, x, perm=None):
    """`(z [V, N, D], new_batch_stats)` of `x` `[V, N, H, W, C]` in BN groups (training mode)."""
    def fn(xg):
      (_, z, _), upd = self.model.apply({'params': params, 'batch_stats': batch_stats}, xg,
                                        train=True, mutable=['batch_stats'])
      return z, upd['batch_stats']
    return momentum.grouped_apply(fn, x, self.bn_groups, perm)

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    views = [self.normalize(batch['view_0']), self.normalize(batch['view_1'])]
    xq = jnp.stack(views) if self.symmetric else views[0][None]
    xk = jnp.stack(views) if self.symmetric else views[1][None]
    perm = None
    if self.shuffle_bn and self.bn_groups > 1:
      if rng is None:
        raise ValueError('MoCo v2 with Shuffle BN (bn_groups > 1) needs an rng in loss_fn')
      perm = momentum.shuffle(rng, xk.shape[1])
    q, batch_stats = self.encode(params, batch_stats, xq)
    k, key_stats = self.encode(method_state['key_params'], method_state['key_batch_stats'], xk,
                               perm)
    k = jax.lax.stop_gradient(losses.normalize(k))
    new_state = dict(method_state, key_batch_stats=key_stats)
    queue_1 = method_state['queue_1']
    if self.symmetric:
      queue_0 = method_state['queue_0']
      loss = (losses.moco_loss(q[0], k[1], queue_1['items'], temperature=self.temperature) +
              losses.moco_loss(q[1], k[0], queue_0['items'], temperature=self.temperature)) / 2
      new_state.update(queue_0=ema.queue_push(queue_0, k[0]),
                       queue_1=ema.queue_push(queue_1, k[1]))
    else:
      loss = losses.moco_loss(q[0], k[0], queue_1['items'], temperature=self.temperature)
      new_state.update(queue_1=ema.queue_push(queue_1, k[0]))
    return loss, (batch_stats, new_state, {'loss': loss, 'tau': self.momentum(step)})

  def update_state(self, old_params, params, method_state, step):
    del old_params
    key = ema.ema_update(method_state['key_params'], params, self.momentum(step))
    return params, dict(method_state, key_params=key)

  def features(self, params, batch_stats, images):
    return self.model.apply({'params': params, 'batch_stats': batch_stats},
                            self.normalize(images), train=False, method=Encoder.embed)


def from_config(config, total_steps: int) -> MoCoV2:
  """MoCo v2 from `config.method`: proj_hidden_dims, proj_dim, proj_use_bn, queue_size,
  temperature, symmetric, tau_base, tau_final, bn_groups, shuffle_bn."""
  m = config.method
  return MoCoV2(
      projector=models.MLP(tuple(m.proj_hidden_dims), int(m.proj_dim), use_bn=bool(m.proj_use_bn),
                           dtype=models.dtype_of(config.model)),
      proj_dim=int(m.proj_dim), queue_size=int(m.queue_size), temperature=float(m.temperature),
      symmetric=bool(m.symmetric), total_steps=int(total_steps), tau_base=float(m.tau_base),
      tau_final=float(m.tau_final), bn_groups=int(m.bn_groups), shuffle_bn=bool(m.shuffle_bn),
      **two_view.common_kwargs(config))
