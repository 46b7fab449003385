"""DINO (Caron et al., 2021): self-distillation with no labels, an EMA teacher and centring.

- Views: multi-crop `view_0..view_{V-1}` (jssl.methods.multicrop.Crops): the student sees all
  V crops, the teacher only the first T = n_global (global) crops. Each crop size runs through
  the backbone as one batch; the head sees all crops at once.
- params: the student `{'backbone', 'head'}` (head: jssl.models.dino_head.DINOHead, L2-normalized
  bottleneck and weight-normalized last layer of K = out_dim outputs).
- method_state: `{'teacher_params', 'teacher_batch_stats', 'center' [K]}`; the teacher starts as a
  copy of the student; BatchNorm, if any, runs in training mode in both networks, and the
  teacher keeps its own running statistics.
- loss: `losses.dino_loss(student [V, N, K], teacher [T, N, K], center, student_temp,
  teacher_temp(step))`: cross-entropy between the centred, sharpened teacher of each global crop
  and the student of every other crop. The teacher temperature follows DINO's per-epoch
  `linspace(warmup_teacher_temp, teacher_temp, W)` for the first W epochs, then stays constant.
- loss_fn also returns the new centre `losses.dino_center(center, teacher, momentum)` (the mean
  over the T*N global-crop teacher outputs of the global batch).
- update_state: during the first `freeze_last_layer_steps` steps the head's last layer keeps its
  old value (its gradient is stopped too, as DINO sets it to None); then the teacher becomes
  `tau_k teacher + (1 - tau_k) student`, `tau_k = ema.cosine_momentum(k, total_steps, tau_base)`
  (0.996 -> 1).
- metrics: loss, teacher_temp, tau, and the collapse diagnostics of the sharpened, centred
  teacher distribution (jssl.methods.collapse.assignment_entropies, against ln K):
  `teacher_entropy_of_mean` and `teacher_mean_entropy`, and `entropy_uniform` = ln K.
- The weight-decay schedule (cosine 0.04 -> 0.4, `optim.weight_decay_end`) is the optimizer's:
  jssl.train.optim.weight_decay_schedule.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import losses, models
from jssl.methods import base, collapse, ema, multicrop
from jssl.models import dino_head

sg = jax.lax.stop_gradient


def _where_tree(cond, a, b):
  return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


@dataclasses.dataclass(frozen=True)
class DINO(base.Method):
  """DINO with a `backbone` (ResNet or ViT) and a `head` (dino_head.DINOHead)."""
  backbone: nn.Module
  head: nn.Module
  crops: multicrop.Crops = multicrop.Crops()
  total_steps: int = 1000
  steps_per_epoch: float = 1.0
  tau_base: float = 0.996
  student_temp: float = 0.1
  teacher_temp: float = 0.07
  warmup_teacher_temp: float = 0.04
  warmup_teacher_temp_epochs: int = 0
  center_momentum: float = 0.9
  freeze_last_layer_steps: int = 0
  running_stats_all_crops: bool = False  # see multicrop.backbone_groups
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'dino'

  def input_spec(self):
    return self.crops.input_spec()

  def teacher_temperature(self, step) -> jax.Array:
    """DINO's schedule: epoch e < W: `w0 + (t - w0) e / (W - 1)` (linspace), then t."""
    w = int(self.warmup_teacher_temp_epochs)
    epoch = jnp.floor(jnp.asarray(step, jnp.float32) / self.steps_per_epoch)
    warm = self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * (
        epoch / max(w - 1, 1))
    return jnp.where(epoch < w, warm, self.teacher_temp).astype(jnp.float32)

  def init(self, rng, batch):
    b_rng, h_rng = jax.random.split(rng)
    x = self.normalize(batch['view_0'][:2])
    bb_params, bb_stats = multicrop.init_backbone(self.backbone, b_rng, x)
    h = multicrop.apply_backbone(self.backbone, bb_params, bb_stats, x)[0]
    head_vars = self.head.init(h_rng, h, train=True)
    params = {'backbone': bb_params, 'head': head_vars['params']}
    batch_stats = {'backbone': bb_stats, 'head': head_vars.get('batch_stats', {})}
    copy = lambda t: jax.tree.map(jnp.array, t)
    state = {'teacher_params': copy(params), 'teacher_batch_stats': copy(batch_stats),
             'center': jnp.zeros((self.head.out_dim,), jnp.float32)}
    return params, batch_stats, state

  def _forward(self, params, batch_stats, groups, rng):
    """Logits `[V, N, K]` of every crop in `groups`, and the new batch stats."""
    h, bb_stats = multicrop.backbone_groups(self, self.backbone, params['backbone'],
                                            batch_stats['backbone'], groups, rng)
    z, updates = self.head.apply({'params': params['head'], 'batch_stats': batch_stats['head']},
                                 h, train=True, mutable=['batch_stats'])
    n = groups[0][0].shape[0]
    z = jnp.reshape(z, (-1, n, z.shape[-1]))
    return z, {'backbone': bb_stats, 'head': updates.get('batch_stats', batch_stats['head'])}

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    frozen = jnp.asarray(step) < self.freeze_last_layer_steps
    head = dict(params['head'])
    head['last_layer'] = _where_tree(frozen, sg(head['last_layer']), head['last_layer'])
    params = dict(params, head=head)
    groups = self.crops.groups(batch)
    student, new_stats = self._forward(params, batch_stats, groups, rng)
    teacher, t_stats = self._forward(method_state['teacher_params'],
                                     method_state['teacher_batch_stats'], groups[:1], None)
    teacher = sg(teacher)
    temp = self.teacher_temperature(step)
    loss = losses.dino_loss(student, teacher, method_state['center'],
                            student_temp=self.student_temp, teacher_temp=temp)
    center = losses.dino_center(method_state['center'], teacher, momentum=self.center_momentum)
    new_state = dict(method_state, teacher_batch_stats=sg(t_stats), center=center)
    q = jax.nn.softmax((teacher - jnp.reshape(method_state['center'], (-1,))) / temp, axis=-1)
    ent = collapse.assignment_entropies(q)
    metrics = {'loss': loss, 'teacher_temp': temp,
               'tau': ema.cosine_momentum(step, self.total_steps, self.tau_base),
               'teacher_entropy_of_mean': ent['entropy_of_mean'],
               'teacher_mean_entropy': ent['mean_entropy'],
               'entropy_uniform': jnp.log(float(self.head.out_dim))}
    return loss, (new_stats, new_state, metrics)

  def update_state(self, old_params, params, method_state, step):
    frozen = jnp.asarray(step) < self.freeze_last_layer_steps
    head = dict(params['head'])
    head['last_layer'] = _where_tree(frozen, old_params['head']['last_layer'],
                                     head['last_layer'])
    params = dict(params, head=head)
    tau = ema.cosine_momentum(step, self.total_steps, self.tau_base)
    teacher = ema.ema_update(method_state['teacher_params'], params, tau)
    return params, dict(method_state, teacher_params=teacher)

  def features(self, params, batch_stats, images):
    return multicrop.apply_backbone(self.backbone, params['backbone'], batch_stats['backbone'],
                                    self.normalize(images), train=False)[0]


def from_config(config, total_steps: int) -> DINO:
  """DINO from `config.method` / `config.model` / `config.data.augment` (see configs/dino.py)."""
  m, model = config.method, config.model
  spe = multicrop.steps_per_epoch(config, total_steps)
  head = dino_head.DINOHead(out_dim=int(m.out_dim), hidden_dim=int(m.hidden_dim),
                            bottleneck_dim=int(m.bottleneck_dim), n_layers=int(m.n_layers),
                            use_bn=bool(m.use_bn_in_head), norm_last_layer=bool(m.norm_last_layer),
                            dtype=models.dtype_of(model))
  return DINO(
      backbone=models.from_config(model), head=head,
      crops=multicrop.crops_from_config(config), total_steps=int(total_steps),
      steps_per_epoch=spe, tau_base=float(m.tau_base), student_temp=float(m.student_temp),
      teacher_temp=float(m.teacher_temp), warmup_teacher_temp=float(m.warmup_teacher_temp),
      warmup_teacher_temp_epochs=int(m.warmup_teacher_temp_epochs),
      center_momentum=float(m.center_momentum),
      freeze_last_layer_steps=multicrop.epochs_to_steps(m.freeze_last_layer_epochs, spe),
      running_stats_all_crops=bool(m.get('running_stats_all_crops', False)),
      mean=tuple(model.get('mean', None) or base.CIFAR10_MEAN),
      std=tuple(model.get('std', None) or base.CIFAR10_STD))
