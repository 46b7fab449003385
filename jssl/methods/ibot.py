"""iBOT (Zhou et al., 2022): DINO's [CLS] self-distillation plus a masked-patch self-distillation,
the EMA teacher acting as the online tokenizer of the masked patches.

- Views: multi-crop `view_0..view_{V-1}` (jssl.methods.multicrop.Crops): T = n_global global
  crops, then the local crops. ViT backbones only, built with a mask token and pool 'cls'.
- Masks: drawn on the device in loss_fn from the step's rng (jssl.data.masks.ibot_mask), one
  per global crop of every image, `mask [T, N, L]` over the L = g x g patches of a global crop:
  with probability `mask_probability` an image gets a prediction ratio
  `r ~ U[pred_ratio - pred_ratio_var, pred_ratio + pred_ratio_var]` and BEiT's blocks cover at
  most (and nearly always about) r * L of its patches; otherwise it is not masked at all. iBOT's
  ViT recipes (`--pred_ratio 0 0.3 --pred_ratio_var 0 0.2`: each image picks ratio 0 or
  U[0.1, 0.5] with equal odds) are mask_probability 0.5, pred_ratio 0.3, pred_ratio_var 0.2.
  Local crops are never masked.
- Student: the ViT on the T masked global crops as one batch (masked patch embeddings replaced
  by the mask token) and on the local crops as another, with stochastic depth from the rng; the
  head sees every crop's [CLS] token (`pooled`): `s_cls [V, N, K]`, and the global crops' patch
  tokens: `s_patch [T, N, M, K_p]`.
- Teacher (`method_state['teacher_params']`, a copy of the student at init): the same network on
  the unmasked global crops, no stochastic depth: `t_cls [T, N, K]`, `t_patch [T, N, M, K_p]`.
- Patch slots: a mask covers at most M = floor((pred_ratio + pred_ratio_var) L) patches of a
  crop (`max_masked`), so the patch heads run on M slots per crop, not L: its masked patches
  first, then unmasked ones (`masked_first`), with `mask [T, N, M]` their mask values. The
  loss only reads masked patches, so its value is that of the heads on all L patches at a
  fraction M / L of the cost (DINOv2 gathers the masked patches for the same reason).
- Heads (jssl.models.dino_head.DINOHead): with `shared_head` (iBOT's recipes) one head projects
  the [CLS] and the patch tokens (K_p = K, params `{'backbone', 'head'}`); without it a second
  DINOHead `patch_head` of `patch_out_dim` outputs (DINOv2's untied heads; iBOT's own untied
  variant, which shares the MLP and unties only the last layer, is not provided).
- loss = lambda_cls * L_cls + lambda_patch * L_patch (+ `extra_loss`, nothing in iBOT), with
  `q = softmax((sg(t) - centre) / teacher temperature)`, `log p = log_softmax(s / student_temp)`:
  L_cls = `losses.dino_loss(s_cls, t_cls, center, ...)`: the mean over the pairs (teacher global
    crop t, student crop v != t) of the mean over images of `-sum_k q log p`;
  L_patch = `losses.ibot_patch_loss(s_patch, t_patch, mask, patch_center, ...)` over the T*N
    global-crop images at once: each image's cross-entropies averaged over its masked patches,
    then the mean over the T*N images, which is the mean over the global crops of each crop's
    loss (an unmasked image adds 0 and still counts, as in iBOT).
  `centred_distillation` is exactly this pair of terms.
- method_state: `{'teacher_params', 'center' [K], 'patch_center' [K_p]}`; loss_fn returns
  `center = losses.dino_center(center, t_cls, center_momentum)` and
  `patch_center = losses.ibot_patch_center(patch_center, ..., momentum=...)` of the mean over
  every patch of the teacher's views (iBOT: the teacher's patch head then runs on all L
  patches), or over the masked patches only with `patch_center_on_masked` (DINOv2).
- Teacher temperatures: DINO's warm-up (`warmup_temperature`, one value per epoch), from
  warmup_teacher_temp to teacher_temp for [CLS] and from warmup_teacher_patch_temp to
  teacher_patch_temp for the patches, over warmup_teacher_temp_epochs.
- update_state: the heads' last layers keep their old value for the first
  `freeze_last_layer_steps` steps (their gradient is stopped too); then the teacher becomes
  `tau_k teacher + (1 - tau_k) student`, `tau_k = ema.cosine_momentum(k, total_steps, tau_base)`.
- features: the student backbone's [CLS] token (`pooled`) of the unmasked image, inference mode.
- metrics: loss, cls_loss, patch_loss, teacher_temp, teacher_patch_temp, tau, mask_ratio (the
  fraction of global-crop patches masked) and DINO's collapse diagnostics of the teacher's [CLS]
  targets q (jssl.methods.collapse): teacher_entropy_of_mean, teacher_mean_entropy and
  entropy_uniform = ln K.

DINOv2 (jssl.methods.dinov2) is this class with other defaults and two hooks replaced:
`distill` (Sinkhorn-Knopp targets in place of centring) and `extra_loss` (KoLeo).
"""

import dataclasses
import math
from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import losses, models
from jssl.data import masks as masks_lib
from jssl.methods import base, collapse, ema, multicrop
from jssl.models import dino_head, vit

sg = jax.lax.stop_gradient


def _where_tree(cond, a, b):
  return jax.tree.map(lambda x, y: jnp.where(cond, x, y), a, b)


def masked_first(mask, m: int):
  """`(index [B, m], selected [B, m])`: per row of `mask [B, L]`, the positions of its masked
  patches first (in patch order), then unmasked ones, cut to m slots; `selected` is the mask at
  those slots. With at most m masked patches per row every masked patch has a slot."""
  order = jnp.argsort(1 - jnp.asarray(mask, jnp.int32), axis=-1, stable=True)[:, :m]
  return order, jnp.take_along_axis(jnp.asarray(mask), order, axis=-1)


def _gather(x, index):
  """`x [B, L, ...]` at `index [B, m]` -> `[B, m, ...]`."""
  return jnp.take_along_axis(x, jnp.reshape(index, index.shape + (1,) * (x.ndim - 2)), axis=1)


def warmup_temperature(step, steps_per_epoch: float, start: float, end: float,
                       warmup_epochs: int) -> jax.Array:
  """DINO's teacher-temperature schedule: in epoch e < W, `start + (end - start) e / (W - 1)`
  (numpy's linspace over W epochs), then `end`."""
  w = int(warmup_epochs)
  epoch = jnp.floor(jnp.asarray(step, jnp.float32) / steps_per_epoch)
  warm = start + (end - start) * (epoch / max(w - 1, 1))
  return jnp.where(epoch < w, warm, end).astype(jnp.float32)


def centred_distillation(s_cls, t_cls, s_patch, t_patch, mask, center, patch_center, *,
                         student_temp: float, teacher_temp, teacher_patch_temp):
  """iBOT's two terms `(L_cls, L_patch)` (see the module docstring).

  Args:
    s_cls: `[V, N, K]` student [CLS] logits, the T global crops first; t_cls: `[T, N, K]`.
    s_patch, t_patch: `[T, N, P, K_p]` patch logits of the global crops (student: masked input),
      for all P = L patches or for loss_fn's P = M slots (`masked_first`).
    mask: `[T, N, P]`, 1 on the patches masked in the student's input.
    center: `[K]`; patch_center: `[K_p]`.
  """
  l_cls = losses.dino_loss(s_cls, t_cls, center, student_temp=student_temp,
                           teacher_temp=teacher_temp)
  flat = lambda a: jnp.reshape(a, (-1,) + tuple(jnp.shape(a)[2:]))
  l_patch = losses.ibot_patch_loss(flat(s_patch), flat(t_patch), flat(mask), patch_center,
                                   student_temp=student_temp, teacher_temp=teacher_patch_temp)
  return l_cls, l_patch


@dataclasses.dataclass(frozen=True)
class IBOT(base.Method):
  """iBOT with a ViT `backbone` (mask token), a DINOHead `head` and, untied, a `patch_head`."""
  backbone: nn.Module
  head: nn.Module
  patch_head: Optional[nn.Module] = None  # None: the head is shared by [CLS] and patches
  crops: multicrop.Crops = multicrop.Crops()
  total_steps: int = 1000
  steps_per_epoch: float = 1.0
  tau_base: float = 0.996
  student_temp: float = 0.1
  teacher_temp: float = 0.07
  warmup_teacher_temp: float = 0.04
  teacher_patch_temp: float = 0.07
  warmup_teacher_patch_temp: float = 0.04
  warmup_teacher_temp_epochs: int = 0
  center_momentum: float = 0.9
  patch_center_momentum: float = 0.9
  patch_center_on_masked: bool = False
  lambda_cls: float = 1.0
  lambda_patch: float = 1.0
  pred_ratio: float = 0.3
  pred_ratio_var: float = 0.2
  mask_probability: float = 0.5
  mask_min_num_patches: int = 0  # 0: iBOT's (g // 3) ** 2
  mask_min_aspect: float = 0.3
  freeze_last_layer_steps: int = 0
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'ibot'

  def __post_init__(self):
    bb = self.backbone
    if not isinstance(bb, vit.ViT):
      raise ValueError(f'{self.name}: the backbone must be a ViT (patch tokens and a mask '
                       f'token), got {type(bb).__name__}')
    if not bb.use_mask_token:
      raise ValueError(f'{self.name}: the ViT needs use_mask_token=True')
    if bb.pool != 'cls' or not bb.class_token:
      raise ValueError(f"{self.name} distils the [CLS] token: config.model.pool must be 'cls', "
                       f'got {bb.pool!r}')
    for what, size in (('global_size', self.crops.global_size),
                       ('local_size', self.crops.local_size)):
      if size % bb.patch_size:
        raise ValueError(f'{self.name}: config.data.augment.{what}={size} must be a multiple of '
                         f'config.model.patch_size={bb.patch_size}')
    masks_lib.ibot_check(self.pred_ratio, self.pred_ratio_var, self.mask_probability)

  # ------------------------------------------------------------------------------- structure

  @property
  def shared_head(self) -> bool:
    return self.patch_head is None

  @property
  def grid(self) -> int:
    """The side of a global crop's patch grid."""
    return self.crops.global_size // self.backbone.patch_size

  @property
  def max_masked(self) -> int:
    """M, the most patches of a global crop a mask can cover: `floor((pred_ratio +
    pred_ratio_var) L)` (masks.ibot_mask never exceeds it), at least 1."""
    l = self.grid ** 2
    return min(l, max(1, int(math.floor((self.pred_ratio + self.pred_ratio_var) * l + 1e-4))))

  @property
  def patch_out_dim(self) -> int:
    return (self.patch_head or self.head).out_dim

  def _head_keys(self) -> tuple:
    return ('head',) if self.shared_head else ('head', 'patch_head')

  def input_spec(self):
    return self.crops.input_spec()

  def teacher_temperature(self, step) -> jax.Array:
    return warmup_temperature(step, self.steps_per_epoch, self.warmup_teacher_temp,
                              self.teacher_temp, self.warmup_teacher_temp_epochs)

  def teacher_patch_temperature(self, step) -> jax.Array:
    return warmup_temperature(step, self.steps_per_epoch, self.warmup_teacher_patch_temp,
                              self.teacher_patch_temp, self.warmup_teacher_temp_epochs)

  def centre_state(self) -> dict:
    """The centres in method_state: `{'center' [K], 'patch_center' [K_p]}`, zeros."""
    return {'center': jnp.zeros((self.head.out_dim,), jnp.float32),
            'patch_center': jnp.zeros((self.patch_out_dim,), jnp.float32)}

  def init(self, rng, batch):
    b_rng, h_rng, p_rng = jax.random.split(rng, 3)
    x = self.normalize(batch['view_0'][:2])
    bb = self.backbone.init(b_rng, x, True)['params']
    out = self.backbone.apply({'params': bb}, x, False)
    params = {'backbone': bb, 'head': self.head.init(h_rng, out['pooled'])['params']}
    if not self.shared_head:
      params['patch_head'] = self.patch_head.init(p_rng, out['patch_tokens'][:, 0])['params']
    copy = lambda t: jax.tree.map(jnp.array, t)
    return params, {}, {'teacher_params': copy(params), **self.centre_state()}

  # ---------------------------------------------------------------------------------- forward

  def draw_masks(self, rng, n: int) -> jax.Array:
    """`[T, n, L]` int32 masks of the global crops (1 = masked), see the module docstring."""
    t, g = self.crops.n_global, self.grid
    m = masks_lib.ibot_mask(rng, t * n, (g, g), self.pred_ratio, self.pred_ratio_var,
                            self.mask_probability, self.mask_min_num_patches or None,
                            self.mask_min_aspect)
    return jnp.reshape(m, (t, n, g * g))

  def student_tokens(self, params, groups, mask, rng=None):
    """Backbone outputs of the student: [CLS] tokens `[V*N, D]` in view order and the global
    crops' patch tokens `[T*N, L, D]`; `mask [T*N, L]` masks the global crops' input."""
    rngs = lambda i: None if rng is None else {'dropout': jax.random.fold_in(rng, i)}
    variables = {'params': params['backbone']}
    x = self.normalize(jnp.concatenate(groups[0], axis=0))
    out = self.backbone.apply(variables, x, True, mask=mask, rngs=rngs(0))
    cls = [out['pooled']]
    if len(groups) > 1:
      x = self.normalize(jnp.concatenate(groups[1], axis=0))
      cls.append(self.backbone.apply(variables, x, True, rngs=rngs(1))['pooled'])
    return jnp.concatenate(cls, axis=0), out['patch_tokens']

  def project(self, params, cls, patches):
    """The heads: `(cls [M, D] -> [M, K], patches [..., D] -> [..., K_p])`, float32."""
    z_cls = self.head.apply({'params': params['head']}, cls)
    if self.shared_head:
      z_patch = self.head.apply({'params': params['head']}, patches)
    else:
      z_patch = self.patch_head.apply({'params': params['patch_head']}, patches)
    return z_cls, z_patch

  # ------------------------------------------------------------------------- loss and hooks

  def patch_centre_from_all_patches(self) -> bool:
    """Whether the patch centre needs the teacher's logits of every patch (iBOT's centre)."""
    return not self.patch_center_on_masked

  def distill(self, method_state, s_cls, t_cls, s_patch, t_patch, mask, temp, patch_temp,
              teacher_patch_mean=None):
    """`(L_cls, L_patch, method_state updates, teacher [CLS] targets [T, N, K])`: centring.

    s_patch, t_patch `[T, N, M, K_p]` and mask `[T, N, M]` hold the patch slots that may be
    masked (see `masked_first`); `teacher_patch_mean [K_p]`: the mean of the teacher's logits
    over every patch, for iBOT's patch centre (when `patch_centre_from_all_patches()`)."""
    l_cls, l_patch = centred_distillation(
        s_cls, t_cls, s_patch, t_patch, mask, method_state['center'],
        method_state['patch_center'], student_temp=self.student_temp, teacher_temp=temp,
        teacher_patch_temp=patch_temp)
    center = losses.dino_center(method_state['center'], t_cls, momentum=self.center_momentum)
    if self.patch_centre_from_all_patches():
      patch_center = losses.ibot_patch_center(method_state['patch_center'],
                                              teacher_patch_mean[None],
                                              momentum=self.patch_center_momentum)
    else:
      patch_center = losses.ibot_patch_center(method_state['patch_center'], t_patch, mask,
                                              momentum=self.patch_center_momentum)
    q = jax.nn.softmax((t_cls - method_state['center']) / temp, axis=-1)
    return l_cls, l_patch, {'center': center, 'patch_center': patch_center}, q

  def extra_loss(self, global_cls):
    """`(term added to the loss, metrics)` from the student's global-crop [CLS] tokens
    `[T, N, D]` (before the head). iBOT has none."""
    del global_cls
    return jnp.zeros((), jnp.float32), {}

  def _stop_frozen(self, params, step):
    frozen = jnp.asarray(step) < self.freeze_last_layer_steps
    params = dict(params)
    for key in self._head_keys():
      head = dict(params[key])
      head['last_layer'] = _where_tree(frozen, sg(head['last_layer']), head['last_layer'])
      params[key] = head
    return params

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    params = self._stop_frozen(params, step)
    groups = self.crops.groups(batch)
    t, n, g2 = self.crops.n_global, groups[0][0].shape[0], self.grid ** 2
    if rng is None:  # no step rng given (a direct call): masks still differ from step to step
      mask_rng, drop_rng = jax.random.fold_in(jax.random.PRNGKey(0), step), None
    else:
      mask_rng, drop_rng = jax.random.split(rng)
    mask = self.draw_masks(mask_rng, n)  # [T, N, L]
    flat_mask = jnp.reshape(mask, (t * n, g2))
    # The patch heads only see the M slots that can hold masked patches (the loss reads no other).
    index, selected = masked_first(flat_mask, self.max_masked)  # [T*N, M]
    cls_tok, patch_tok = self.student_tokens(params, groups, flat_mask, drop_rng)
    s_cls, s_patch = self.project(params, cls_tok, _gather(patch_tok, index))
    teacher = sg(method_state['teacher_params'])
    t_out = self.backbone.apply({'params': teacher['backbone']},
                                self.normalize(jnp.concatenate(groups[0], axis=0)), False)
    patch_mean = None
    if self.patch_centre_from_all_patches():
      t_cls, t_patch = self.project(teacher, t_out['pooled'], t_out['patch_tokens'])
      patch_mean = sg(jnp.mean(t_patch, axis=(0, 1)))
      t_patch = _gather(t_patch, index)
    else:
      t_cls, t_patch = self.project(teacher, t_out['pooled'],
                                    _gather(t_out['patch_tokens'], index))
    t_cls, t_patch = sg(t_cls), sg(t_patch)
    m = self.max_masked
    s_cls = jnp.reshape(s_cls, (-1, n, s_cls.shape[-1]))
    t_cls = jnp.reshape(t_cls, (t, n, t_cls.shape[-1]))
    s_patch = jnp.reshape(s_patch, (t, n, m, s_patch.shape[-1]))
    t_patch = jnp.reshape(t_patch, (t, n, m, t_patch.shape[-1]))
    temp, patch_temp = self.teacher_temperature(step), self.teacher_patch_temperature(step)
    l_cls, l_patch, updates, q = self.distill(
        method_state, s_cls, t_cls, s_patch, t_patch, jnp.reshape(selected, (t, n, m)), temp,
        patch_temp, patch_mean)
    extra, extra_metrics = self.extra_loss(jnp.reshape(cls_tok[:t * n], (t, n, -1)))
    loss = self.lambda_cls * l_cls + self.lambda_patch * l_patch + extra
    ent = collapse.assignment_entropies(q)
    metrics = {'loss': loss, 'cls_loss': l_cls, 'patch_loss': l_patch, 'teacher_temp': temp,
               'teacher_patch_temp': patch_temp,
               'tau': ema.cosine_momentum(step, self.total_steps, self.tau_base),
               'mask_ratio': jnp.mean(mask.astype(jnp.float32)),
               'teacher_entropy_of_mean': ent['entropy_of_mean'],
               'teacher_mean_entropy': ent['mean_entropy'],
               'entropy_uniform': jnp.log(float(self.head.out_dim)), **extra_metrics}
    return loss, (batch_stats, dict(method_state, **updates), metrics)

  def update_state(self, old_params, params, method_state, step):
    frozen = jnp.asarray(step) < self.freeze_last_layer_steps
    params = dict(params)
    for key in self._head_keys():
      head = dict(params[key])
      head['last_layer'] = _where_tree(frozen, old_params[key]['last_layer'], head['last_layer'])
      params[key] = head
    tau = ema.cosine_momentum(step, self.total_steps, self.tau_base)
    teacher = ema.ema_update(method_state['teacher_params'], params, tau)
    return params, dict(method_state, teacher_params=teacher)

  def features(self, params, batch_stats, images):
    del batch_stats
    return self.backbone.apply({'params': params['backbone']}, self.normalize(images),
                               False)['pooled']


def build_kwargs(config, total_steps: int) -> dict:
  """IBOT's fields from `config.method` / `config.model` / `config.data.augment` (shared with
  DINOv2's builder)."""
  m, model = config.method, config.model
  if not str(model.name).startswith('vit'):
    raise ValueError(f'{m.name} needs a ViT backbone (patch tokens, a mask token): '
                     f'config.model.name={model.name!r}; choose one of {sorted(vit.VIT_CONFIGS)}')
  shared = bool(m.shared_head)
  if shared and int(m.patch_out_dim) != int(m.out_dim):
    raise ValueError(f'config.method.shared_head=True projects patches with the [CLS] head: '
                     f'config.method.patch_out_dim={m.patch_out_dim} must equal '
                     f'config.method.out_dim={m.out_dim}')
  spe = multicrop.steps_per_epoch(config, total_steps)

  def head(out_dim):
    return dino_head.DINOHead(out_dim=int(out_dim), hidden_dim=int(m.hidden_dim),
                              bottleneck_dim=int(m.bottleneck_dim), n_layers=int(m.n_layers),
                              norm_last_layer=bool(m.norm_last_layer),
                              dtype=models.dtype_of(model))

  return dict(
      backbone=models.from_config(model, use_mask_token=True), head=head(m.out_dim),
      patch_head=None if shared else head(m.patch_out_dim),
      crops=multicrop.crops_from_config(config), total_steps=int(total_steps),
      steps_per_epoch=spe, tau_base=float(m.tau_base), student_temp=float(m.student_temp),
      teacher_temp=float(m.teacher_temp), warmup_teacher_temp=float(m.warmup_teacher_temp),
      teacher_patch_temp=float(m.teacher_patch_temp),
      warmup_teacher_patch_temp=float(m.warmup_teacher_patch_temp),
      warmup_teacher_temp_epochs=int(m.warmup_teacher_temp_epochs),
      center_momentum=float(m.center_momentum),
      patch_center_momentum=float(m.patch_center_momentum),
      patch_center_on_masked=bool(m.patch_center_on_masked),
      lambda_cls=float(m.lambda_cls), lambda_patch=float(m.lambda_patch),
      pred_ratio=float(m.pred_ratio), pred_ratio_var=float(m.pred_ratio_var),
      mask_probability=float(m.mask_probability),
      mask_min_num_patches=int(m.mask_min_num_patches), mask_min_aspect=float(m.mask_min_aspect),
      freeze_last_layer_steps=multicrop.epochs_to_steps(m.freeze_last_layer_epochs, spe),
      mean=tuple(model.get('mean', None) or base.CIFAR10_MEAN),
      std=tuple(model.get('std', None) or base.CIFAR10_STD))


def from_config(config, total_steps: int) -> IBOT:
  """iBOT from `config.method` (out_dim, patch_out_dim, shared_head, temperatures, masks...),
  `config.model` (a ViT) and `config.data.augment` (the multi-crop layout); configs/ibot.py."""
  return IBOT(**build_kwargs(config, total_steps))
