"""SwAV (Caron et al., 2020): swapped prediction of online cluster codes across crops.

- Views: multi-crop `view_0..view_{V-1}` (jssl.methods.multicrop.Crops); each crop size runs
  through the backbone as one batch, then the projector (Dense-BN-ReLU-Dense, 2048-128) sees all
  crops at once; `z = normalize(projection)`, `scores = z @ C` with C the K prototypes
  (jssl.models.dino_head.Prototypes, one unit-norm prototype per kernel column).
- params: `{'backbone', 'projector', 'prototypes'}`.
- loss: `losses.swav_loss(scores [V, N, K], temperature, epsilon, n_iters, assign_crops)`: the
  codes `q_a = sinkhorn(scores[a])` of each assigned (global) crop, over the global batch (under
  jit the Sinkhorn sums span all devices), predicted from the scores of every other crop.
- method_state: `{}`, or with `queue_length > 0` `{'queues': [one ema queue per assigned crop]}`
  of past normalized projections of that crop (global length, FIFO). From
  `queue_start_step` on, each step pushes this batch's z of crop a (after using the queue);
  once a queue is full its rows' scores `queue @ C` are stacked above the batch's before
  Sinkhorn and only the batch rows of the codes are kept (as main_swav.py does).
- K >= D is required (the builder refuses K < D): with fewer prototypes than dimensions the
  projections can lie orthogonal to all of them, scores 0, uniform codes: a stationary collapse.
- metrics: loss, (queue_used), and the collapse diagnostics of the batch's codes of the first
  assigned crop (jssl.methods.collapse.assignment_entropies, against ln K):
  `code_entropy_of_mean`, `code_mean_entropy`, and `entropy_uniform` = ln K.
- update_state: the prototypes are re-normalized after every update; during the first
  `freeze_prototypes_steps` steps they keep their old values (their gradient is stopped too, as
  SwAV sets it to None).
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import losses, models
from jssl.methods import base, collapse, ema, multicrop
from jssl.models import dino_head

sg = jax.lax.stop_gradient


def swapped_prediction(scores, codes, assign_crops, temperature):
  """`mean_a mean_{v != a} mean_i -sum_k codes_a[i, k] log_softmax(scores[v] / T)[i, k]`: the
  cross-entropy of swav_loss with the codes given (used when a queue widened Sinkhorn)."""
  v_n, n = scores.shape[0], scores.shape[1]
  log_p = jax.nn.log_softmax(jnp.asarray(scores, jnp.float32) / temperature, axis=-1)
  total = 0.0
  for a, q in zip(assign_crops, codes):
    ce = -jnp.einsum('nk,vnk->v', q, log_p, precision=jax.lax.Precision.HIGHEST) / n
    total = total + jnp.sum(jnp.where(jnp.arange(v_n) != a, ce, 0.0)) / (v_n - 1)
  return total / len(assign_crops)


@dataclasses.dataclass(frozen=True)
class SwAV(base.Method):
  """SwAV with `backbone`, `projector` (an MLP) and `prototypes` (dino_head.Prototypes)."""
  backbone: nn.Module
  projector: nn.Module
  prototypes: nn.Module
  crops: multicrop.Crops = multicrop.Crops()
  temperature: float = 0.1
  epsilon: float = 0.05
  sinkhorn_iters: int = 3
  assign_crops: tuple = (0, 1)
  freeze_prototypes_steps: int = 0
  queue_length: int = 0
  queue_start_step: int = 0
  running_stats_all_crops: bool = False  # see multicrop.backbone_groups
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'swav'

  def input_spec(self):
    return self.crops.input_spec()

  def init(self, rng, batch):
    b_rng, p_rng, c_rng = jax.random.split(rng, 3)
    x = self.normalize(batch['view_0'][:2])
    bb_params, bb_stats = multicrop.init_backbone(self.backbone, b_rng, x)
    h = multicrop.apply_backbone(self.backbone, bb_params, bb_stats, x)[0]
    proj = self.projector.init(p_rng, h, train=True)
    z = self.projector.apply(proj, h, train=False)
    protos = self.prototypes.init(c_rng, z)['params']
    protos = {'kernel': dino_head.normalize_prototypes(protos['kernel'])}
    params = {'backbone': bb_params, 'projector': proj['params'], 'prototypes': protos}
    batch_stats = {'backbone': bb_stats, 'projector': proj.get('batch_stats', {})}
    state = {}
    if self.queue_length:
      dim = z.shape[-1]
      state = {'queues': [ema.queue_init(self.queue_length, dim) for _ in self.assign_crops]}
    return params, batch_stats, state

  def embed(self, params, batch_stats, groups, rng):
    """`(z [V, N, D] normalized projections, new batch_stats)`."""
    h, bb_stats = multicrop.backbone_groups(self, self.backbone, params['backbone'],
                                            batch_stats['backbone'], groups, rng)
    z, updates = self.projector.apply(
        {'params': params['projector'], 'batch_stats': batch_stats['projector']}, h,
        train=True, mutable=['batch_stats'])
    z = dino_head.l2_normalize(z)
    n = groups[0][0].shape[0]
    return jnp.reshape(z, (-1, n, z.shape[-1])), {
        'backbone': bb_stats, 'projector': updates.get('batch_stats', batch_stats['projector'])}

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    step = jnp.asarray(step)
    kernel = params['prototypes']['kernel']
    kernel = jnp.where(step < self.freeze_prototypes_steps, sg(kernel), kernel)
    z, new_stats = self.embed(params, batch_stats, self.crops.groups(batch), rng)
    scores = self.prototypes.apply({'params': {'kernel': kernel}}, z)  # [V, N, K]
    kw = dict(epsilon=self.epsilon, n_iters=self.sinkhorn_iters)
    metrics = {}
    if not self.queue_length:
      loss = losses.swav_loss(scores, temperature=self.temperature,
                              assign_crops=self.assign_crops, **kw)
      new_state = method_state
    else:
      codes, queues = [], []
      for a, queue in zip(self.assign_crops, method_state['queues']):
        full = queue['count'] >= self.queue_length
        q_scores = self.prototypes.apply({'params': {'kernel': sg(kernel)}}, queue['items'])
        with_queue = losses.sinkhorn(jnp.concatenate([q_scores, scores[a]], axis=0),
                                     **kw)[self.queue_length:]
        codes.append(jnp.where(full, with_queue, losses.sinkhorn(scores[a], **kw)))
        pushed = ema.queue_push(queue, z[a])
        queues.append(jax.tree.map(lambda p, q: jnp.where(step >= self.queue_start_step, p, q),
                                   pushed, queue))
        metrics['queue_used'] = full.astype(jnp.float32)
      loss = swapped_prediction(scores, codes, self.assign_crops, self.temperature)
      new_state = dict(method_state, queues=queues)
    ent = collapse.assignment_entropies(losses.sinkhorn(scores[self.assign_crops[0]], **kw))
    metrics.update(code_entropy_of_mean=ent['entropy_of_mean'],
                   code_mean_entropy=ent['mean_entropy'],
                   entropy_uniform=jnp.log(float(scores.shape[-1])))
    return loss, (new_stats, new_state, dict(metrics, loss=loss))

  def update_state(self, old_params, params, method_state, step):
    frozen = jnp.asarray(step) < self.freeze_prototypes_steps
    kernel = jnp.where(frozen, old_params['prototypes']['kernel'],
                       dino_head.normalize_prototypes(params['prototypes']['kernel']))
    return dict(params, prototypes={'kernel': kernel}), method_state

  def features(self, params, batch_stats, images):
    return multicrop.apply_backbone(self.backbone, params['backbone'], batch_stats['backbone'],
                                    self.normalize(images), train=False)[0]


def from_config(config, total_steps: int) -> SwAV:
  """SwAV from `config.method` / `config.model` / `config.data.augment` (see configs/swav.py)."""
  m, model = config.method, config.model
  if int(m.n_prototypes) < int(m.proj_dim):
    raise ValueError(
        f'config.method.n_prototypes ({m.n_prototypes}) < config.method.proj_dim ({m.proj_dim}): '
        'the projections can then lie orthogonal to every prototype (all scores 0, uniform '
        'codes and predictions, loss log K, zero gradient), a collapse SwAV does not leave; '
        'use at least proj_dim prototypes (the paper: 3000 for 128 dimensions)')
  spe = multicrop.steps_per_epoch(config, total_steps)
  dtype = models.dtype_of(model)
  projector = models.MLP(hidden_dims=tuple(m.proj_hidden_dims), out_dim=int(m.proj_dim),
                         last_bn=False, dtype=dtype)
  return SwAV(
      backbone=models.from_config(model), projector=projector,
      prototypes=dino_head.Prototypes(int(m.n_prototypes)),
      crops=multicrop.crops_from_config(config), temperature=float(m.temperature),
      epsilon=float(m.epsilon), sinkhorn_iters=int(m.sinkhorn_iters),
      assign_crops=tuple(int(a) for a in m.assign_crops),
      freeze_prototypes_steps=multicrop.epochs_to_steps(m.freeze_prototypes_epochs, spe),
      queue_length=int(m.queue_length),
      queue_start_step=multicrop.epochs_to_steps(m.queue_start_epoch, spe),
      running_stats_all_crops=bool(m.get('running_stats_all_crops', False)),
      mean=tuple(model.get('mean', None) or base.CIFAR10_MEAN),
      std=tuple(model.get('std', None) or base.CIFAR10_STD))
