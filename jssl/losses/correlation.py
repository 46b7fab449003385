"""Canonical-correlation-style losses: VICReg, Barlow Twins, and SwAV with its Sinkhorn-Knopp."""

from typing import Sequence

import jax
import jax.numpy as jnp

from jssl.losses import _common as c

sg = jax.lax.stop_gradient
_HI = jax.lax.Precision.HIGHEST


def _off_diagonal_sq_sum(m: jax.Array) -> jax.Array:
  return jnp.sum(m * m) - jnp.sum(jnp.diagonal(m) ** 2)


def vicreg_loss(z1: jax.Array, z2: jax.Array, *, sim_coeff: float = 25.0,
                std_coeff: float = 25.0, cov_coeff: float = 1.0):
  """VICReg (Bardes, Ponce & LeCun, 2022): variance, invariance, covariance.

  `inv = mean((z1 - z2)^2)`; each branch centred over the batch; `std = sqrt(var_unbiased + 1e-4)`;
  `var = mean(relu(1 - std_1)) / 2 + mean(relu(1 - std_2)) / 2`; `cov_b = z_b^T z_b / (N - 1)`;
  `cov = sum(offdiag(cov_1)^2) / D + sum(offdiag(cov_2)^2) / D`;
  `loss = sim_coeff * inv + std_coeff * var + cov_coeff * cov`.

  Args:
    z1, z2: `[N, D]` embeddings of the two views, N >= 2.

  Returns:
    `(loss, aux)`, aux a dict with the unweighted terms `invariance`, `variance`, `covariance`.
  """
  c.assert_rank('z1', z1, 2)
  c.assert_same_shape('z1 and z2', z1, z2)
  n, d = jnp.shape(z1)
  if n < 2:
    raise ValueError(f'vicreg_loss needs at least 2 rows, z1 has shape {jnp.shape(z1)}')
  z1, z2 = c.f32(z1), c.f32(z2)
  inv = jnp.mean((z1 - z2) ** 2)

  def var_cov(z):
    z = z - jnp.mean(z, axis=0)
    std = jnp.sqrt(jnp.sum(z * z, axis=0) / (n - 1) + 1e-4)
    cov = jnp.einsum('nd,ne->de', z, z, precision=_HI) / (n - 1)
    return jnp.mean(jax.nn.relu(1.0 - std)), _off_diagonal_sq_sum(cov) / d

  v1, c1 = var_cov(z1)
  v2, c2 = var_cov(z2)
  var = (v1 + v2) / 2
  cov = c1 + c2
  loss = sim_coeff * inv + std_coeff * var + cov_coeff * cov
  return loss, {'invariance': inv, 'variance': var, 'covariance': cov}


def barlow_twins_loss(z1: jax.Array, z2: jax.Array, *, lambd: float = 0.0051) -> jax.Array:
  """Barlow Twins (Zbontar et al., 2021).

  Each branch standardized over the batch `(z - mean) / sqrt(var_biased + 1e-5)`;
  `c = z1n^T z2n / N` (`[D, D]`); `loss = sum_i (1 - c_ii)^2 + lambd * sum_{i != j} c_ij^2`.

  Args:
    z1, z2: `[N, D]` embeddings of the two views.
  """
  c.assert_rank('z1', z1, 2)
  c.assert_same_shape('z1 and z2', z1, z2)
  n = jnp.shape(z1)[0]

  def standardize(z):
    z = c.f32(z)
    mu = jnp.mean(z, axis=0)
    var = jnp.mean((z - mu) ** 2, axis=0)
    return (z - mu) / jnp.sqrt(var + 1e-5)

  cc = jnp.einsum('nd,ne->de', standardize(z1), standardize(z2), precision=_HI) / n
  on_diag = jnp.sum((1.0 - jnp.diagonal(cc)) ** 2)
  return on_diag + lambd * _off_diagonal_sq_sum(cc)


def sinkhorn(scores: jax.Array, *, epsilon: float = 0.05, n_iters: int = 3) -> jax.Array:
  """Sinkhorn-Knopp equipartition of SwAV (Caron et al., 2020), in the log domain.

  `Q = exp(scores / epsilon)^T` (`[K, N]`), `Q /= sum(Q)`; `n_iters` times: each row divided by
  its sum then by K, each column divided by its sum then by N; finally `Q *= N`, returned as `Q^T`
  (`[N, K]`, rows sum to 1, column sums tend to N/K). Computed on `log Q` with log-sum-exp, so it
  neither overflows nor underflows whole columns at small epsilon. Gradient-free.

  Args:
    scores: `[N, K]` sample-prototype scores (cosines in SwAV).
  """
  c.assert_rank('scores', scores, 2)
  n, k = jnp.shape(scores)
  log_q = c.f32(sg(scores)).T / epsilon
  log_q = log_q - jax.nn.logsumexp(log_q)
  log_k, log_n = jnp.log(float(k)), jnp.log(float(n))

  def step(_, lq):
    lq = lq - jax.nn.logsumexp(lq, axis=1, keepdims=True) - log_k
    return lq - jax.nn.logsumexp(lq, axis=0, keepdims=True) - log_n

  log_q = jax.lax.fori_loop(0, n_iters, step, log_q)
  return jnp.exp(log_q + log_n).T


def swav_loss(scores: jax.Array, *, temperature: float = 0.1, epsilon: float = 0.05,
              n_iters: int = 3, assign_crops: Sequence[int] = (0, 1)) -> jax.Array:
  """SwAV's swapped prediction loss (Caron et al., 2020).

  For each a in assign_crops: `q = sinkhorn(sg(scores[a]))` and
  `l_a = mean over v != a of mean_i -sum_k q[i, k] log_softmax(scores[v] / temperature)[i, k]`;
  `loss = mean_a l_a`.

  Args:
    scores: `[V, N, K]` prototype scores of V crops (the assigned ones usually the global crops).
  """
  c.assert_rank('scores', scores, 3)
  v_n = jnp.shape(scores)[0]
  assign_crops = tuple(int(a) for a in assign_crops)
  if v_n < 2 or not assign_crops or any(not 0 <= a < v_n for a in assign_crops):
    raise ValueError(f'swav_loss needs V >= 2 crops and assign_crops within [0, V): scores '
                     f'{jnp.shape(scores)}, assign_crops {assign_crops}')
  log_p = jax.nn.log_softmax(c.f32(scores) / temperature, axis=-1)  # [V, N, K]
  n = jnp.shape(scores)[1]
  total = 0.0
  for a in assign_crops:
    q = sinkhorn(scores[a], epsilon=epsilon, n_iters=n_iters)
    ce = -jnp.einsum('nk,vnk->v', q, log_p, precision=_HI) / n
    others = jnp.arange(v_n) != a
    total = total + jnp.sum(jnp.where(others, ce, 0.0)) / (v_n - 1)
  return total / len(assign_crops)
