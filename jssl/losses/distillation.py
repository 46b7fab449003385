"""Self-distillation losses: BYOL, SimSiam, MeanShift, DINO (and DINO's centre update)."""

import jax
import jax.numpy as jnp

from jssl.losses import _common as c

sg = jax.lax.stop_gradient


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
