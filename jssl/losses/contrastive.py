"""InfoNCE-family losses: InfoNCE, SimCLR's NT-Xent, MoCo, and NNCLR's nearest neighbours."""

from typing import Optional

import jax
import jax.numpy as jnp

from jssl.losses import _common as c


def info_nce(query: jax.Array, keys: jax.Array, negatives: Optional[jax.Array] = None, *,
             temperature: float = 0.1) -> jax.Array:
  """InfoNCE (van den Oord et al., CPC, 2018) with in-batch and optional extra negatives.

  `logits_i = [cos(q_i, k_j) / T for all j] ++ [cos(q_i, n_m) / T for all m]`;
  `loss = mean_i -log softmax(logits_i)[i]`: key i is the positive of query i, every other key
  and every extra negative (e.g. a MoCo queue) is a negative.

  Args:
    query: `[N, D]`.
    keys: `[N, D]`, `keys[i]` the positive of `query[i]`.
    negatives: optional `[M, D]` extra negatives.
  """
  c.assert_rank('query', query, 2)
  c.assert_same_shape('query and keys', query, keys)
  logits = c.cosine_matrix(query, keys) / temperature
  if negatives is not None:
    c.assert_rank('negatives', negatives, 2)
    if jnp.shape(negatives)[1] != jnp.shape(query)[1]:
      raise ValueError(f'negatives must have the feature size of query: negatives '
                       f'{jnp.shape(negatives)}, query {jnp.shape(query)}')
    logits = jnp.concatenate([logits, c.cosine_matrix(query, negatives) / temperature], axis=1)
  positive = jnp.diagonal(logits)
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - positive)


def nt_xent(z1: jax.Array, z2: jax.Array, *, temperature: float = 0.1) -> jax.Array:
  """NT-Xent, SimCLR's loss (Chen et al., 2020).

  With `z = concat(z1, z2)` (2N views) and `s_ij = cos(z_i, z_j) / T`, the positive of view i is
  view i+N (mod 2N) and
  `loss = mean_i -log(exp(s_i,pos) / sum_{k != i} exp(s_ik))`.

  Args:
    z1, z2: `[N, D]` projections of the two views; row i of each comes from the same image.
  """
  c.assert_rank('z1', z1, 2)
  c.assert_same_shape('z1 and z2', z1, z2)
  n = jnp.shape(z1)[0]
  z = jnp.concatenate([c.f32(z1), c.f32(z2)], axis=0)
  s = c.cosine_matrix(z, z) / temperature
  s = jnp.where(jnp.eye(2 * n, dtype=bool), -jnp.inf, s)
  pos = jnp.concatenate([jnp.arange(n, 2 * n), jnp.arange(n)])
  s_pos = jnp.take_along_axis(s, pos[:, None], axis=1)[:, 0]
  return jnp.mean(jax.nn.logsumexp(s, axis=1) - s_pos)


def moco_loss(query: jax.Array, key: jax.Array, queue: jax.Array, *,
              temperature: float = 0.2) -> jax.Array:
  """MoCo v1/v2 loss (He et al., 2020; Chen et al., 2020): one positive key, a queue of negatives.

  `logits_i = [cos(q_i, k_i) / T] ++ [cos(q_i, n_m) / T for every queue row m]` (no in-batch
  negatives); `loss = mean_i -log softmax(logits_i)[0]`. The key gets no gradient through the
  queue; the method stops its gradient (it comes from the momentum encoder).

  Args:
    query: `[N, D]`; key: `[N, D]`; queue: `[M, D]` past keys.
  """
  c.assert_rank('query', query, 2)
  c.assert_same_shape('query and key', query, key)
  c.assert_rank('queue', queue, 2)
  if jnp.shape(queue)[1] != jnp.shape(query)[1]:
    raise ValueError(f'queue must have the feature size of query: queue {jnp.shape(queue)}, '
                     f'query {jnp.shape(query)}')
  qn, kn = c.normalize(query), c.normalize(key)
  pos = jnp.sum(qn * kn, axis=-1, keepdims=True) / temperature
  neg = c.cosine_matrix(query, queue) / temperature
  logits = jnp.concatenate([pos, neg], axis=1)
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - pos[:, 0])


def nearest_neighbors(z: jax.Array, support: jax.Array, *, k: int = 1) -> jax.Array:
  """Nearest neighbours of NNCLR (Dwibedi et al., 2021).

  For each row z_i, the k rows s of `support` with the highest `cos(z_i, s)`.

  Gradient-free (`sg` applied). Returns `[N, D]` for k=1, else `[N, k, D]`, nearest first.
  The rows are returned as stored in `support` (not normalized).

  Args:
    z: `[N, D]` queries; support: `[M, D]` support set, M >= k.
  """
  c.assert_rank('z', z, 2)
  c.assert_rank('support', support, 2)
  if jnp.shape(support)[1] != jnp.shape(z)[1]:
    raise ValueError(f'support must have the feature size of z: support {jnp.shape(support)}, '
                     f'z {jnp.shape(z)}')
  if not 1 <= k <= jnp.shape(support)[0]:
    raise ValueError(f'k must be in [1, len(support)={jnp.shape(support)[0]}], got {k}')
  support = jax.lax.stop_gradient(support)
  sim = c.cosine_matrix(jax.lax.stop_gradient(z), support)
  _, idx = jax.lax.top_k(sim, k)
  nn = jnp.take(support, idx, axis=0)
  return nn[:, 0] if k == 1 else nn
