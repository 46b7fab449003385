"""Collapse diagnostics: pure functions of a batch of embeddings or of assignment distributions.

- `embedding_std(z [N, D])`: `mean_d std_i (z_i / ||z_i||)_d`, the mean per-dimension standard
  deviation of the L2-normalized embeddings (Chen & He, 2021, SimSiam section 4.1). A collapsed
  network (every z_i the same direction) reads 0; embeddings spread evenly over the sphere read
  about `1 / sqrt(D)`.
- `effective_rank(h [N, D])`: `exp(-sum_k p_k log p_k)` with `p = s / sum(s)` and `s` the
  singular values of h (Roy & Vetterli, 2007; RankMe, Garrido et al., 2023), uncentred. It lies
  in [1, min(N, D)]: 1 for a constant (rank-1) output, near min(N, D) for isotropic Gaussian
  features.
- `assignment_entropies(p [..., K])`: for row-stochastic distributions over K outputs (DINO's
  sharpened teacher, SwAV's codes), `entropy_of_mean = H(mean_i p_i)` and `mean_entropy =
  mean_i H(p_i)`, in nats. Healthy: entropy_of_mean near ln K (every output used) and
  mean_entropy well below it (each example confident). A uniform collapse reads ln K for both;
  a one-hot collapse (every example on the same output) reads 0 for both.

They run in jitted steps (jax.numpy) and on host arrays alike.
"""

import jax.numpy as jnp

_EPS = 1e-12


def embedding_std(z) -> jnp.ndarray:
  """`mean_d std_i normalize(z)_{i, d}` (population std over the N rows)."""
  z = jnp.asarray(z, jnp.float32)
  zn = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), _EPS)
  return jnp.mean(jnp.std(zn, axis=0))


def effective_rank(h) -> jnp.ndarray:
  """`exp(entropy(s / sum s))` of the singular values s of `h [N, D]` (no centring)."""
  s = jnp.linalg.svd(jnp.asarray(h, jnp.float32), compute_uv=False)
  p = s / jnp.maximum(jnp.sum(s), _EPS)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, _EPS)), 0.0)))


def _entropy(p, axis=-1):
  return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.maximum(p, _EPS)), 0.0), axis=axis)


def assignment_entropies(p) -> dict:
  """`{'entropy_of_mean', 'mean_entropy'}` of distributions `p [..., K]` (rows sum to 1)."""
  p = jnp.asarray(p, jnp.float32)
  p = jnp.reshape(p, (-1, p.shape[-1]))
  return {'entropy_of_mean': _entropy(jnp.mean(p, axis=0)),
          'mean_entropy': jnp.mean(_entropy(p))}


def feature_diagnostics(features) -> dict:
  """`{'embedding_std', 'effective_rank'}` of backbone features `[N, F]` (the monitor's)."""
  return {'embedding_std': float(embedding_std(features)),
          'effective_rank': float(effective_rank(features))}
