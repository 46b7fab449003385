"""Small numerics shared by every loss family: float32 casting, safe L2 normalization, checks."""

import chex
import jax
import jax.numpy as jnp

NORM_EPS = 1e-12


def f32(x: jax.Array) -> jax.Array:
  """Casts to float32 (losses compute in float32 whatever the input dtype)."""
  return jnp.asarray(x).astype(jnp.float32)


def normalize(v: jax.Array, eps: float = NORM_EPS) -> jax.Array:
  """`v / max(||v||_2, eps)` along the last axis, in float32, with a finite gradient at v = 0.

  The norm is taken as `sqrt(max(sum(v^2), eps^2))`, which equals `max(||v||, eps)` but never
  differentiates `sqrt` at 0 (where its derivative is infinite and would give NaN).
  """
  v = f32(v)
  sq = jnp.sum(v * v, axis=-1, keepdims=True)
  return v * jax.lax.rsqrt(jnp.maximum(sq, eps * eps))


def cosine_matrix(a: jax.Array, b: jax.Array) -> jax.Array:
  """`[N, D] x [M, D] -> [N, M]` cosine similarities, float32 accumulation."""
  return jnp.einsum('nd,md->nm', normalize(a), normalize(b), precision=jax.lax.Precision.HIGHEST)


def p_norm(x: jax.Array, p: float) -> jax.Array:
  """`||x||_p` along the last axis with a finite (zero) gradient at x = 0."""
  x = f32(x)
  if not p >= 1.0:
    raise ValueError(f'p must be >= 1 (a norm), got p={p}')
  if p == float('inf'):
    return jnp.max(jnp.abs(x), axis=-1)
  if p == 2.0:
    sq = jnp.sum(x * x, axis=-1)
    safe = jnp.where(sq > 0, sq, 1.0)
    return jnp.where(sq > 0, jnp.sqrt(safe), 0.0)
  a = jnp.abs(x)
  s = jnp.sum(a**p, axis=-1)
  safe = jnp.where(s > 0, s, 1.0)
  return jnp.where(s > 0, safe ** (1.0 / p), 0.0)


def assert_rank(name: str, x, rank: int) -> None:
  """Trace-time rank check (chex) whose message names the argument at fault."""
  chex.assert_rank(x, rank, custom_message=f'argument `{name}` must have rank {rank}')


def assert_same_shape(names: str, *xs) -> None:
  """Trace-time shape equality check (chex) whose message names the arguments at fault."""
  chex.assert_equal_shape(xs, custom_message=f'{names} must have the same shape')
