"""Self-distillation losses: BYOL, SimSiam, MeanShift, DINO (and DINO's centre update), iBOT's
masked-patch loss and centre, DINOv2's KoLeo regularizer and Sinkhorn-Knopp teacher, I-JEPA."""

from typing import Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as c
from jssl.losses.correlation import sinkhorn

sg = jax.lax.stop_gradient
_HI = jax.lax.Precision.HIGHEST


def byol_loss(p: jax.Array, z: jax.Array) -> jax.Array:
  """BYOL's regression loss (Grill et al., 2020).

  `loss = mean_i ||normalize(p_i) - normalize(sg(z_i))||^2 = mean_i 2 - 2 cos(p_i, z_i)`.

  Args:
    p: `[N, D]` online predictions; z: `[N, D]` target projections (no gradient).
  """
  c.assert_rank('p', p, 2)
  c.assert_same_shape('p and z', p, z)
  d = c.normalize(p) - c.normalize(sg(z))
  return jnp.mean(jnp.sum(d * d, axis=-1))


def simsiam_loss(p: jax.Array, z: jax.Array) -> jax.Array:
  """SimSiam's negative cosine (Chen & He, 2021): `loss = -mean_i cos(p_i, sg(z_i))`.

  Args:
    p: `[N, D]` predictions; z: `[N, D]` projections of the other view (no gradient).
  """
  c.assert_rank('p', p, 2)
  c.assert_same_shape('p and z', p, z)
  return -jnp.mean(jnp.sum(c.normalize(p) * c.normalize(sg(z)), axis=-1))


def mean_shift_loss(p: jax.Array, z: jax.Array, bank: jax.Array, *, k: int = 5) -> jax.Array:
  """Mean Shift (Koohpayegani, Tejankar & Pirsiavash, 2021).

  The candidates of row i are `{z_i} ∪ bank`; `NN_k(i)` are the k candidates nearest to `z_i` by
  cosine (z_i itself always first); `loss = mean_i mean_{c in NN_k(i)} ||normalize(p_i) -
  normalize(sg(c))||^2`. With k = 1 it is `byol_loss(p, z)`.

  Args:
    p: `[N, D]` online predictions; z: `[N, D]` target embeddings; bank: `[M, D]` memory bank of
    past target embeddings; k: neighbours, 1 <= k <= M + 1.
  """
  c.assert_rank('p', p, 2)
  c.assert_same_shape('p and z', p, z)
  c.assert_rank('bank', bank, 2)
  if jnp.shape(bank)[1] != jnp.shape(z)[1]:
    raise ValueError(f'bank must have the feature size of z: bank {jnp.shape(bank)}, '
                     f'z {jnp.shape(z)}')
  if not 1 <= k <= jnp.shape(bank)[0] + 1:
    raise ValueError(f'k must be in [1, len(bank) + 1 = {jnp.shape(bank)[0] + 1}], got {k}')
  pn, zn, bn = c.normalize(p), c.normalize(sg(z)), c.normalize(sg(bank))
  # z_i is its own nearest candidate (cosine 1); the other k - 1 come from the bank.
  loss_self = jnp.sum((pn - zn) ** 2, axis=-1)
  if k == 1:
    return jnp.mean(loss_self)
  sim = jnp.einsum('nd,md->nm', zn, bn, precision=jax.lax.Precision.HIGHEST)
  _, idx = jax.lax.top_k(sim, k - 1)
  nbrs = jnp.take(bn, idx, axis=0)  # [N, k-1, D]
  loss_bank = jnp.sum((pn[:, None, :] - nbrs) ** 2, axis=-1)  # [N, k-1]
  return jnp.mean((loss_self + jnp.sum(loss_bank, axis=1)) / k)


def dino_loss(student: jax.Array, teacher: jax.Array, center: jax.Array, *,
              student_temp: float = 0.1, teacher_temp: float = 0.04) -> jax.Array:
  """DINO's cross-entropy between teacher and student crops (Caron et al., 2021).

  `q_t = softmax((sg(teacher_t) - center) / teacher_temp)`,
  `log p_s = log_softmax(student_s / student_temp)`;
  `loss = mean over pairs (t, s), s != t, of mean_i -sum_k q_t[i, k] log p_s[i, k]`.

  Args:
    student: `[S, N, K]` logits for S crops, the first T of them the global crops.
    teacher: `[T, N, K]` teacher logits of the T global crops, T <= S.
    center: `[K]` (or `[1, K]`) running centre of the teacher logits (state: no gradient).
  """
  c.assert_rank('student', student, 3)
  c.assert_rank('teacher', teacher, 3)
  s_n, n, k = jnp.shape(student)
  t_n = jnp.shape(teacher)[0]
  if jnp.shape(teacher)[1:] != (n, k) or t_n > s_n:
    raise ValueError(f'teacher must be [T, N, K] with T <= S for student [S, N, K]: teacher '
                     f'{jnp.shape(teacher)}, student {jnp.shape(student)}')
  if jnp.size(center) != k:
    raise ValueError(f'center must have K={k} entries, got shape {jnp.shape(center)}')
  if s_n < 2:
    raise ValueError(f'dino_loss needs at least 2 crops, student has shape {jnp.shape(student)}')
  q = jax.nn.softmax((c.f32(sg(teacher)) - jnp.reshape(c.f32(sg(center)), (k,))) / teacher_temp,
                     axis=-1)
  log_p = jax.nn.log_softmax(c.f32(student) / student_temp, axis=-1)
  # ce[t, s] = mean_i -sum_k q_t log p_s
  ce = -jnp.einsum('tnk,snk->ts', q, log_p, precision=jax.lax.Precision.HIGHEST) / n
  pair = 1.0 - jnp.eye(t_n, s_n, dtype=jnp.float32)
  return jnp.sum(ce * pair) / jnp.sum(pair)


def dino_center(center: jax.Array, teacher: jax.Array, *, momentum: float = 0.9) -> jax.Array:
  """DINO's centre update (Caron et al., 2021).

  `new_center = momentum * center + (1 - momentum) * mean over the T*N rows of teacher`.

  Args:
    center: `[K]` (or `[1, K]`, the shape is kept); teacher: `[T, N, K]` (or `[N, K]`) logits.
  """
  k = jnp.shape(teacher)[-1]
  if jnp.size(center) != k:
    raise ValueError(f'center must have K={k} entries, got shape {jnp.shape(center)}')
  batch_mean = jnp.mean(jnp.reshape(c.f32(sg(teacher)), (-1, k)), axis=0)
  new = momentum * c.f32(center) + (1.0 - momentum) * jnp.reshape(batch_mean, jnp.shape(center))
  return new


def ibot_patch_loss(student: jax.Array, teacher: jax.Array, mask: jax.Array, center: jax.Array, *,
                    student_temp: float = 0.1, teacher_temp: float = 0.04) -> jax.Array:
  """iBOT's masked-patch self-distillation (Zhou et al., 2022).

  `q = softmax((sg(teacher) - sg(center)) / teacher_temp)`,
  `log p = log_softmax(student / student_temp)`, both over K;
  `h[n, l] = -sum_k q[n, l, k] log p[n, l, k]` (one cross-entropy per patch);
  `loss = mean_n sum_l mask[n, l] h[n, l] / max(sum_l mask[n, l], 1)`.

  Each image's cross-entropies are averaged over its masked patches, then the N images are
  averaged: an image with no masked patch contributes 0 and still counts in the mean over N (as
  iBOT's reference does, dividing by the number of images). Patches outside the mask take no part.

  Args:
    student: `[N, L, K]` patch logits of the student on the masked view.
    teacher: `[N, L, K]` patch logits of the teacher on the same view unmasked (no gradient).
    mask: `[N, L]` bool or 0/1, true on the patches masked in the student's input.
    center: `[K]` (or `[1, K]`) running centre of the teacher's patch logits (no gradient).
  """
  c.assert_rank('student', student, 3)
  c.assert_rank('teacher', teacher, 3)
  c.assert_same_shape('student and teacher', student, teacher)
  c.assert_rank('mask', mask, 2)
  n, l, k = jnp.shape(student)
  if jnp.shape(mask) != (n, l):
    raise ValueError(f'mask must be [N, L] = {(n, l)} (the leading axes of student), got '
                     f'{jnp.shape(mask)}')
  if jnp.size(center) != k:
    raise ValueError(f'center must have K={k} entries, got shape {jnp.shape(center)}')
  q = jax.nn.softmax((c.f32(sg(teacher)) - jnp.reshape(c.f32(sg(center)), (k,))) / teacher_temp,
                     axis=-1)
  log_p = jax.nn.log_softmax(c.f32(student) / student_temp, axis=-1)
  h = -jnp.sum(q * log_p, axis=-1)  # [N, L]
  m = c.f32(sg(mask))
  per_image = jnp.sum(h * m, axis=1) / jnp.maximum(jnp.sum(m, axis=1), 1.0)
  return jnp.mean(per_image)


def ibot_patch_center(center: jax.Array, teacher: jax.Array, mask: Optional[jax.Array] = None, *,
                      momentum: float = 0.9) -> jax.Array:
  """iBOT's patch-centre update (Zhou et al., 2022).

  `new_center = momentum * center + (1 - momentum) * mean over the patches of sg(teacher)`.

  With `mask=None` the mean is over every patch of every image (iBOT centres with all the patch
  tokens of the teacher's unmasked views). With a mask it is the mask-weighted mean
  `sum(mask * teacher) / sum(mask)` over the patches, and the centre is returned unchanged when
  the mask selects no patch.

  Args:
    center: `[K]` (or `[1, K]`, the shape is kept).
    teacher: `[N, L, K]` patch logits, or any leading axes `[..., K]` (e.g. `[T, N, L, K]`).
    mask: None, or bool / 0-1 weights of the shape of teacher's leading axes (`[N, L]`).
  """
  if jnp.ndim(teacher) < 2:
    raise ValueError(f'teacher must be [..., K] patch logits of rank >= 2, got shape '
                     f'{jnp.shape(teacher)}')
  k = jnp.shape(teacher)[-1]
  if jnp.size(center) != k:
    raise ValueError(f'center must have K={k} entries, got shape {jnp.shape(center)}')
  t = jnp.reshape(c.f32(sg(teacher)), (-1, k))
  old = c.f32(center)
  if mask is None:
    batch_mean = jnp.mean(t, axis=0)
    return momentum * old + (1.0 - momentum) * jnp.reshape(batch_mean, jnp.shape(center))
  if jnp.shape(mask) != jnp.shape(teacher)[:-1]:
    raise ValueError(f'mask must have the leading shape of teacher {jnp.shape(teacher)[:-1]}, '
                     f'got {jnp.shape(mask)}')
  m = jnp.reshape(c.f32(sg(mask)), (-1,))
  count = jnp.sum(m)
  batch_mean = jnp.einsum('r,rk->k', m, t, precision=_HI) / jnp.where(count > 0, count, 1.0)
  new = momentum * old + (1.0 - momentum) * jnp.reshape(batch_mean, jnp.shape(center))
  return jnp.where(count > 0, new, old)


def koleo_loss(x: jax.Array, *, eps: float = 1e-8) -> jax.Array:
  """KoLeo regularizer of DINOv2 (Oquab et al., 2023), the Kozachenko-Leonenko differential
  entropy estimator of Sablayrolles et al. (2019).

  `u_i = x_i / max(||x_i||_2, eps)`;
  `j(i) = argmax_{j != i} <u_i, u_j>` (the nearest other row; an index, not differentiated);
  `d_i = ||u_i - u_j(i)||_2`; `loss = -mean_i log(d_i + eps)`.

  The gradient flows through `d_i` into both `u_i` and its neighbour. Identical rows are at
  distance 0 exactly: their terms are `-log(eps)` with a zero gradient (not NaN). Rows that are
  positive multiples of each other are at the distance of float32 rounding (1e-8 to 1e-7), not 0.
  Under `jax.jit` on a sharded batch the neighbours are searched in the global batch (DINOv2
  searches each device's share).

  Args:
    x: `[N, D]` features (DINOv2: the student's class tokens of one crop), N >= 2.
  """
  c.assert_rank('x', x, 2)
  n = jnp.shape(x)[0]
  if n < 2:
    raise ValueError(f'koleo_loss needs at least 2 rows in x (a nearest neighbour), got shape '
                     f'{jnp.shape(x)}')
  u = c.normalize(x, eps)
  dots = jnp.einsum('nd,md->nm', sg(u), sg(u), precision=_HI)
  dots = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, dots)
  nearest = jnp.argmax(dots, axis=1)
  d = c.p_norm(u - jnp.take(u, nearest, axis=0), 2.0)
  # Identical rows are at distance 0 exactly: compiled, `u_i - u_j` may be fused into a
  # multiply-add that leaves a rounding residue (~1e-8, the size of eps) even when x_i == x_j.
  same = jnp.all(jnp.asarray(x) == jnp.take(jnp.asarray(x), nearest, axis=0), axis=-1)
  d = jnp.where(same, 0.0, d)
  return -jnp.mean(jnp.log(d + eps))


def sinkhorn_knopp_teacher(teacher_logits: jax.Array, *, teacher_temp: float,
                           n_iters: int = 3) -> jax.Array:
  """DINOv2's Sinkhorn-Knopp teacher (Oquab et al., 2023), in place of DINO's centre + sharpen.

  `sinkhorn(teacher_logits, epsilon=teacher_temp, n_iters=n_iters)`, that is:
  `Q = exp(teacher_logits / teacher_temp)^T` (`[K, N]`), `Q /= sum(Q)`; `n_iters` times: each
  prototype row divided by its sum then by K, each sample column divided by its sum then by N;
  finally `Q *= N`, returned as `Q^T` (`[N, K]`), in the log domain.

  Each returned row (a sample's target distribution) sums to 1; the prototype totals (column sums
  of the result) tend to N / K. Adding the same `[K]` vector to every row of `teacher_logits` (a
  centre) changes nothing; a per-row constant changes nothing only as `n_iters` grows. The
  targets are gradient-free. Under `jax.jit` on a sharded batch the sums span the global batch,
  as DINOv2's all-reduced sums do. `teacher_temp` has no default: DINOv2 schedules it.

  Args:
    teacher_logits: `[N, K]` teacher logits (DINOv2: the class-token head's, or the patch head's
      on the masked patches gathered to `[M, K]`).
  """
  c.assert_rank('teacher_logits', teacher_logits, 2)
  return sinkhorn(teacher_logits, epsilon=teacher_temp, n_iters=n_iters)


def ijepa_loss(predicted: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """I-JEPA's latent prediction loss (Assran et al., 2023).

  `t = (sg(target) - mean_D) / sqrt(var_biased + 1e-6)`, a layer norm over D with no learned
  scale or bias; `per_patch = mean_D (predicted - t)^2`;
  `loss = sum(per_patch * mask) / max(sum(mask), 1)`.

  The squared L2 distance per patch, divided by D, averaged over the target-block patches of the
  whole batch (0 when the mask selects nothing). With `[N, M, D]` representations gathered at the
  target positions and an all-ones mask it is the mean squared error over all elements. The
  target's statistics are taken after subtracting its first value (the same numbers, but a
  constant target normalizes to exact zeros instead of amplified rounding error). I-JEPA's
  released code uses a smooth-L1 and PyTorch's layer-norm epsilon 1e-5 instead.

  Args:
    predicted: `[N, L, D]` predictor outputs; target: `[N, L, D]` target-encoder outputs (no
      gradient); mask: `[N, L]` bool or 0/1, 1 on the patches of the target blocks.
  """
  c.assert_rank('predicted', predicted, 3)
  c.assert_same_shape('predicted and target', predicted, target)
  c.assert_rank('mask', mask, 2)
  if jnp.shape(mask) != jnp.shape(predicted)[:2]:
    raise ValueError(f'mask must be [N, L] = {jnp.shape(predicted)[:2]} (the leading axes of '
                     f'predicted), got {jnp.shape(mask)}')
  t = c.f32(sg(target))
  t = t - t[..., :1]
  t = t - jnp.mean(t, axis=-1, keepdims=True)
  t = t * jax.lax.rsqrt(jnp.mean(t * t, axis=-1, keepdims=True) + 1e-6)
  per_patch = jnp.mean((c.f32(predicted) - t) ** 2, axis=-1)
  m = c.f32(sg(mask))
  return jnp.sum(per_patch * m) / jnp.maximum(jnp.sum(m), 1.0)
