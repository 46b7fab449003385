"""Helpers of the momentum-encoder methods (MoCo v2 / v3, MeanShift): the momentum schedule,
BatchNorm groups and Shuffle BN. Pure functions; no mesh, no Flax state.

- `momentum_at(step, total_steps, base, final)`: `final - (final - base)(cos(pi k / K) + 1) / 2`
  (k clipped to K): `base` at step 0, `final` at K; constant when `final == base`
  (MoCo v2's m = 0.999, MeanShift's 0.99), BYOL / MoCo v3's schedule with `final = 1`,
  solo-learn's 0.99 -> 0.999 otherwise.
- `grouped_apply(fn, x, groups, perm=None)`: BatchNorm over groups of the batch, as
  per-GPU BatchNorm in the original (PyTorch DDP / DataParallel) implementations.
  `x` is `[V, N, ...]` (V views). Each view's N examples are optionally permuted by `perm`,
  cut into `groups` contiguous groups of N / groups, and `fn` runs on each group
  (`jax.vmap` over views and groups), so the BatchNorm statistics of a group are those of its
  N / groups examples only; the outputs are un-permuted back to the input order. `fn(x_group)`
  returns `(outputs, batch_stats)`; the new running statistics are the mean over views and
  groups of the groups' updates (`m * old + (1 - m) * mean_g stat_g`).
- `shuffle(rng, n)`: a random permutation of n and its inverse (Shuffle BN, He et al., 2020).

Shuffle BN without a mesh: with `groups = G` and `perm` a fresh random permutation per step,
the key encoder's group g holds N / G random examples of the global batch, while the query
encoder's group g holds the contiguous block g: the query and its positive key are normalized
with statistics of different example sets, which is the point of MoCo's Shuffle BN (with G the
number of GPUs, it is exactly MoCo's scheme: per-GPU BN, keys computed on a batch shuffled
across GPUs). Groups are defined on the global batch, not on devices, so the result is the same
on 1 and on 8 devices; under jit over a batch sharded on 'data' with G a multiple of the device
count, each group's statistics are computed on its own device with no cross-device reduction
(tested on the compiled HLO), i.e. per-device BN. `groups = 1` is plain global BatchNorm.
Nothing here needs a mesh or `jax.shard_map`; the shuffle itself is a gather across devices,
as MoCo's all-gather + shuffle is.
"""

import jax
import jax.numpy as jnp


def momentum_at(step, total_steps: int, base: float, final: float = 1.0) -> jax.Array:
  """`final - (final - base) * (cos(pi * k / K) + 1) / 2` in float32, k = min(step, K)."""
  k = jnp.minimum(jnp.asarray(step, jnp.float32), total_steps)
  return final - (final - base) * (jnp.cos(jnp.pi * k / max(total_steps, 1)) + 1.0) / 2.0


def shuffle(rng: jax.Array, n: int):
  """`(perm, inverse)`: a random permutation of `range(n)` and its inverse."""
  perm = jax.random.permutation(rng, n)
  return perm, jnp.argsort(perm)


def grouped_apply(fn, x: jax.Array, groups: int = 1, perm=None):
  """`(outputs [V, N, ...], batch_stats)`: `fn` applied per view and per group (see module).

  Args:
    fn: `fn(x_group [N / groups, ...]) -> (outputs pytree, batch_stats pytree)`.
    x: `[V, N, ...]`.
    groups: number of BatchNorm groups; must divide N.
    perm: optional `(perm, inverse)` of `shuffle`: the examples are permuted before the groups
      are cut, and the outputs are returned in the original order.
  """
  v, n = x.shape[:2]
  if groups < 1 or n % groups:
    raise ValueError(f'the batch of {n} examples (per view) must divide into bn_groups='
                     f'{groups} BatchNorm groups')
  if perm is not None:
    x = jnp.take(x, perm[0], axis=1)
  xg = jnp.reshape(x, (v, groups, n // groups) + x.shape[2:])
  out, stats = jax.vmap(jax.vmap(fn))(xg)
  out = jax.tree.map(lambda o: jnp.reshape(o, (v, n) + o.shape[3:]), out)
  if perm is not None:
    out = jax.tree.map(lambda o: jnp.take(o, perm[1], axis=1), out)
  stats = jax.tree.map(lambda s: jnp.mean(s, axis=(0, 1)), stats)
  return out, stats
