"""DINOv2 (Oquab et al., 2023): iBOT (jssl.methods.ibot) with untied heads, Sinkhorn-Knopp
teacher targets in place of centring, and the KoLeo regularizer; a ViT with LayerScale,
stochastic depth and optional register tokens (Darcet et al., 2024).

Everything iBOT's module docstring states holds (views, masks, student and teacher passes,
EMA, frozen last layers, features, metrics), with these differences:
- Heads: by default untied (`shared_head=False`): `head` (K = out_dim) projects the [CLS]
  tokens and `patch_head` (K_p = patch_out_dim) the patch tokens, two whole DINOHeads.
- `centering='sinkhorn'` (the paper's choice): the teacher targets are
  `q_cls = losses.sinkhorn_knopp_teacher(t_cls, teacher_temp)` over the T*N global-crop rows of
  the global batch, and for the patches `q_patch = masked_sinkhorn_teacher(t_patch, mask,
  teacher_patch_temp)`: Sinkhorn-Knopp over the masked patches only, as DINOv2 gathers them.
  With static shapes it runs on all T*N*M patch slots (iBOT's `masked_first`: every masked
  patch and some unmasked ones) with the unmasked rows left out of every prototype (row) sum:
  the result on the masked rows equals sinkhorn_knopp_teacher of those rows alone (their count
  is the N of its column normalization); the unmasked rows still get normalized
  distributions, which the loss never reads. Then
    L_cls = `cls_cross_entropy(s_cls, q_cls)`: the mean over the pairs (teacher global crop t,
      student crop v != t) of the mean over images of `-sum_k q log softmax(s / student_temp)`;
    L_patch = `patch_cross_entropy(s_patch, q_patch, mask)`: per image, the mean over its masked
      patches; then the mean over the T*N global-crop images (as ibot_patch_loss).
  With `centering='centre'` it is iBOT's centring and sharpening (method_state keeps the two
  centres); the patch centre then follows the masked patches only (DINOv2's), or every patch
  with `patch_center_on_masked=False`. With 'sinkhorn' method_state is `{'teacher_params'}`.
- KoLeo: `koleo_weight * sum_t losses.koleo_loss(c_t)`, c_t `[N, D]` the student backbone's
  [CLS] tokens of global crop t (the masked view, before the head; koleo_loss L2-normalizes
  them), summed over the T global crops as DINOv2 does. Under jit the nearest neighbours are
  searched in the global batch (DINOv2: within each GPU's share). Logged as `koleo_loss` (the
  unweighted sum).
- DINOv2 has one teacher temperature: configs/dinov2.py sets the patch temperatures to the
  [CLS] ones.

Not reproduced: DINOv2's exact mask count per batch (it masks int(0.5 B) images with
stratified ratios; here each image independently, as iBOT), its per-block cap of half the
patches, uniform drop-path rates (jssl's ViT ramps them linearly with depth), layer-wise lr
decay and the patch-embedding lr factor.
"""

import dataclasses

import jax
import jax.numpy as jnp

from jssl import losses
from jssl.methods import ibot

sg = jax.lax.stop_gradient
CENTERINGS = ('sinkhorn', 'centre')


def masked_sinkhorn_teacher(teacher_logits, mask, *, teacher_temp, n_iters: int = 3):
  """Sinkhorn-Knopp targets `[M, K]` over the rows where `mask [M]` is true, static shapes.

  On `log Q = teacher_logits^T / teacher_temp` (`[K, M]`), `n_iters` times: each prototype row
  divided by its sum over the selected columns (samples), then each column by its own sum. On the
  selected rows the result equals `losses.sinkhorn_knopp_teacher` of those rows alone (the
  constant factors K and N of that function cancel in the column step); every returned row sums
  to 1; with no row selected every row is `softmax(teacher_logits / teacher_temp)`. No gradient.
  """
  if n_iters < 1:
    raise ValueError(f'masked_sinkhorn_teacher needs n_iters >= 1, got {n_iters}')
  log_q = jnp.asarray(sg(teacher_logits), jnp.float32).T / teacher_temp
  keep = (jnp.reshape(sg(mask), (1, -1)) > 0)

  def step(_, lq):
    rows = jax.nn.logsumexp(jnp.where(keep, lq, -jnp.inf), axis=1, keepdims=True)
    lq = lq - jnp.where(jnp.isfinite(rows), rows, 0.0)
    return lq - jax.nn.logsumexp(lq, axis=0, keepdims=True)

  return jnp.exp(jax.lax.fori_loop(0, n_iters, step, log_q)).T


def cls_cross_entropy(s_cls, targets, *, student_temp: float):
  """`mean over (t, v != t) of mean_i -sum_k targets[t, i, k] log_softmax(s_cls[v, i] / T_s)_k`
  for student logits `[V, N, K]` and teacher targets `[T, N, K]` (rows summing to 1)."""
  v, n, _ = jnp.shape(s_cls)
  t = jnp.shape(targets)[0]
  log_p = jax.nn.log_softmax(jnp.asarray(s_cls, jnp.float32) / student_temp, axis=-1)
  ce = -jnp.einsum('tnk,vnk->tv', sg(targets), log_p, precision=jax.lax.Precision.HIGHEST) / n
  pair = 1.0 - jnp.eye(t, v, dtype=jnp.float32)
  return jnp.sum(ce * pair) / jnp.sum(pair)


def patch_cross_entropy(s_patch, targets, mask, *, student_temp: float):
  """`mean over images of sum_l mask h / max(sum_l mask, 1)` with
  `h = -sum_k targets log_softmax(s_patch / T_s)`; s_patch, targets `[..., L, K]`, mask
  `[..., L]` (the images are all the leading entries)."""
  log_p = jax.nn.log_softmax(jnp.asarray(s_patch, jnp.float32) / student_temp, axis=-1)
  h = -jnp.sum(sg(targets) * log_p, axis=-1)
  m = jnp.asarray(sg(mask), jnp.float32)
  return jnp.mean(jnp.sum(h * m, axis=-1) / jnp.maximum(jnp.sum(m, axis=-1), 1.0))


def sinkhorn_distillation(s_cls, t_cls, s_patch, t_patch, mask, *, student_temp: float,
                          teacher_temp, teacher_patch_temp, n_iters: int = 3):
  """DINOv2's two terms with Sinkhorn-Knopp targets: `(L_cls, L_patch, q_cls, q_patch)`.

  Shapes as `ibot.centred_distillation`: s_cls `[V, N, K]`, t_cls `[T, N, K]`, s_patch and
  t_patch `[T, N, L, K_p]`, mask `[T, N, L]`.
  """
  k, k_p = jnp.shape(t_cls)[-1], jnp.shape(t_patch)[-1]
  q_cls = losses.sinkhorn_knopp_teacher(jnp.reshape(t_cls, (-1, k)), teacher_temp=teacher_temp,
                                        n_iters=n_iters)
  q_cls = jnp.reshape(q_cls, jnp.shape(t_cls))
  q_patch = masked_sinkhorn_teacher(jnp.reshape(t_patch, (-1, k_p)), jnp.reshape(mask, (-1,)),
                                    teacher_temp=teacher_patch_temp, n_iters=n_iters)
  q_patch = jnp.reshape(q_patch, jnp.shape(t_patch))
  return (cls_cross_entropy(s_cls, q_cls, student_temp=student_temp),
          patch_cross_entropy(s_patch, q_patch, mask, student_temp=student_temp), q_cls, q_patch)


@dataclasses.dataclass(frozen=True)
class DINOv2(ibot.IBOT):
  """iBOT + KoLeo + Sinkhorn-Knopp targets (see the module docstring)."""
  patch_center_on_masked: bool = True
  koleo_weight: float = 0.1
  centering: str = 'sinkhorn'
  sinkhorn_iters: int = 3
  name: str = 'dinov2'

  def __post_init__(self):
    super().__post_init__()
    if self.centering not in CENTERINGS:
      raise ValueError(f'config.method.centering must be one of {CENTERINGS}, got '
                       f'{self.centering!r}')
    if self.sinkhorn_iters < 1:
      raise ValueError(f'config.method.sinkhorn_iters must be >= 1, got {self.sinkhorn_iters}')

  def centre_state(self) -> dict:
    return super().centre_state() if self.centering == 'centre' else {}

  def patch_centre_from_all_patches(self) -> bool:
    return self.centering == 'centre' and not self.patch_center_on_masked

  def distill(self, method_state, s_cls, t_cls, s_patch, t_patch, mask, temp, patch_temp,
              teacher_patch_mean=None):
    if self.centering == 'centre':
      return super().distill(method_state, s_cls, t_cls, s_patch, t_patch, mask, temp,
                             patch_temp, teacher_patch_mean)
    l_cls, l_patch, q_cls, _ = sinkhorn_distillation(
        s_cls, t_cls, s_patch, t_patch, mask, student_temp=self.student_temp,
        teacher_temp=temp, teacher_patch_temp=patch_temp, n_iters=self.sinkhorn_iters)
    return l_cls, l_patch, {}, q_cls

  def extra_loss(self, global_cls):
    if not self.koleo_weight:
      return jnp.zeros((), jnp.float32), {}
    koleo = sum(losses.koleo_loss(global_cls[t]) for t in range(global_cls.shape[0]))
    return self.koleo_weight * koleo, {'koleo_loss': koleo}


def from_config(config, total_steps: int) -> DINOv2:
  """DINOv2 from `config.method` (iBOT's keys plus koleo_weight, centering, sinkhorn_iters),
  `config.model` (a ViT: layerscale_init, drop_path_rate, num_registers) and
  `config.data.augment`; configs/dinov2.py."""
  m = config.method
  return DINOv2(**ibot.build_kwargs(config, total_steps), koleo_weight=float(m.koleo_weight),
                centering=str(m.centering), sinkhorn_iters=int(m.sinkhorn_iters))
