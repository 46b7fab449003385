"""Pure helpers for method state: EMA teachers, the cosine momentum schedule, fixed-size queues.

- `cosine_momentum(step, total_steps, base)`: BYOL's `tau_k = 1 - (1 - base)(cos(pi k / K) + 1) / 2`
  (tau_0 = base, tau_K = 1).
- `ema_update(target, online, tau)`: `tau * target + (1 - tau) * online`, leaf by leaf.
- A queue is `{'items': [size, D], 'ptr': int32, 'count': int32}`: `queue_push` writes a batch
  at `ptr` (FIFO: the oldest rows are overwritten first, wrapping around), `count` is the number
  of filled rows (<= size), `queue_ordered` returns the rows oldest first.
"""

import jax
import jax.numpy as jnp
import optax


def cosine_momentum(step, total_steps: int, base: float) -> jax.Array:
  """`1 - (1 - base) * (cos(pi * step / total_steps) + 1) / 2` in float32."""
  k = jnp.minimum(jnp.asarray(step, jnp.float32), total_steps)
  return 1.0 - (1.0 - base) * (jnp.cos(jnp.pi * k / max(total_steps, 1)) + 1.0) / 2.0


def ema_update(target, online, tau):
  """`tau * target + (1 - tau) * online` for every leaf (optax.incremental_update)."""
  return optax.incremental_update(online, target, 1.0 - tau)


def queue_init(size: int, dim: int, dtype=jnp.float32, items=None) -> dict:
  """An empty queue of `size` rows of `dim` (or filled with `items`, `[size, dim]`)."""
  filled = items is not None
  items = jnp.zeros((size, dim), dtype) if items is None else jnp.asarray(items, dtype)
  return {'items': items, 'ptr': jnp.zeros((), jnp.int32),
          'count': jnp.full((), size if filled else 0, jnp.int32)}


def queue_push(queue: dict, x: jax.Array) -> dict:
  """Writes the rows of `x` (`[n, D]`, n <= size) after the newest, overwriting the oldest."""
  items, ptr = queue['items'], queue['ptr']
  size, n = items.shape[0], x.shape[0]
  if n > size:
    raise ValueError(f'cannot push {n} rows into a queue of {size}')
  x = jax.lax.stop_gradient(x).astype(items.dtype)
  if size % n == 0:  # ptr stays a multiple of n: one contiguous slice, no wrap inside a push
    items = jax.lax.dynamic_update_slice(items, x, (ptr, 0))
  else:
    items = items.at[(ptr + jnp.arange(n)) % size].set(x)
  return {'items': items, 'ptr': (ptr + n) % size,
          'count': jnp.minimum(queue['count'] + n, size).astype(jnp.int32)}


def queue_ordered(queue: dict) -> jax.Array:
  """The filled rows, oldest first (a full queue: all rows starting at `ptr`)."""
  items = queue['items']
  return jnp.roll(items, -queue['ptr'], axis=0) if int(queue['count']) == items.shape[0] \
      else items[:int(queue['count'])]
