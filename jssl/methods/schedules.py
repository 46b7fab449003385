"""Hyper-parameter schedules the methods' papers use beyond the learning rate.

`weight_decay_schedule(start, end, total_steps)`: DINO's cosine weight decay (Caron et al.,
2021: 0.04 -> 0.4 for ViTs), `wd(k) = end + (start - end) (1 + cos(pi k / K)) / 2` for the
0-based step k of K, held at `end` after K; with `end` None or equal to `start`, the constant
`start` (a float). optax (>= 0.2.4) takes a schedule as `weight_decay` in `adamw`, `lars`,
`lamb` and `add_decayed_weights`, evaluated at its own step count, so the engine only has to
pass `weight_decay_schedule(cfg.weight_decay, cfg.get('weight_decay_end'), total_steps)` where
it passes `cfg.weight_decay` today (config key `optim.weight_decay_end`).
"""

import math

import jax.numpy as jnp


def weight_decay_schedule(start: float, end=None, total_steps: int = 1):
  """A float (constant) or `step -> wd` (cosine from start to end over total_steps)."""
  if end is None or float(end) == float(start):
    return float(start)
  start, end, total = float(start), float(end), max(int(total_steps), 1)

  def schedule(step):
    k = jnp.minimum(jnp.asarray(step, jnp.float32), total)
    return end + 0.5 * (start - end) * (1.0 + jnp.cos(math.pi * k / total))

  return schedule
