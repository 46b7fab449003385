"""`TrainState`: the whole training state as one pytree (what a checkpoint holds).

Fields: `step` (int32, the number of steps taken = the data position), `params` (trained),
`batch_stats` (BatchNorm running statistics), `opt_state` (optax), `method_state` (teachers,
queues, centres: see jssl.methods.base), `rng` (a raw uint32 PRNG key; step k uses
`fold_in(rng, k)`, so resumed runs draw the same numbers).
"""

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  method_state: Any
  rng: jax.Array


def sample_batch(method, batch_size: int = 2) -> dict:
  """A batch of zeros with the keys and shapes of `method.input_spec()`."""
  return {k: np.zeros((batch_size,) + tuple(shape), dtype)
          for k, (shape, dtype) in method.input_spec().items()}


def init_fn(method, tx, out_sharding=None):
  """Jitted `init(seed) -> TrainState` for `method` and optimizer `tx`, placed with
  `out_sharding` (one sharding for the whole state, e.g. replicated over the mesh)."""
  batch = sample_batch(method)

  def init(seed):
    rng = jax.random.PRNGKey(seed)
    init_rng, state_rng = jax.random.split(rng)
    params, batch_stats, method_state = method.init(init_rng, batch)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                      opt_state=tx.init(params), method_state=method_state, rng=state_rng)

  return jax.jit(init, out_shardings=out_sharding)


def create(method, tx, seed: int, out_sharding=None) -> TrainState:
  """A fresh `TrainState` (see `init_fn`)."""
  return init_fn(method, tx, out_sharding)(jnp.asarray(seed, jnp.uint32))
