"""Every public loss gives the same value and gradient on a batch sharded over 8 devices.

The global batch is placed on a 1-D `('data',)` mesh of the 8 emulated CPU devices (conftest.py),
sharded on its batch axis (axis 1 for `[V, N, K]` / `[S, N, K]` inputs); queues, banks and centres
are replicated. `jax.jit(f)` and `jax.jit(jax.grad(f))` on it must match the single-device result.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jssl import losses

N, D, K = 16, 8, 12  # N divides by 8
B, B1, R = P('data'), P(None, 'data'), P()  # batch axis 0, batch axis 1, replicated
# Both sides compile with LLVM's cheap settings (about half the compile time on CPU). Sharding
# propagation and SPMD partitioning, what this file tests, are HLO passes these options leave alone.
FAST_COMPILE = {'xla_backend_optimization_level': 0, 'xla_llvm_disable_expensive_passes': True}


def _scalar(out):
  """A scalar that depends on every output element (for the gradient of array-valued functions)."""
  total = 0.0
  for leaf in jax.tree.leaves(out):
    w = jnp.cos(jnp.arange(leaf.size, dtype=jnp.float32)).reshape(leaf.shape)
    total = total + jnp.sum(leaf.astype(jnp.float32) * w)
  return total


def _cases():
  """name -> builder(rng) returning (f, args, specs, argnums); f is traced with static options."""
  def r(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)

  def mask(rng, *shape):
    m = rng.random(shape) < 0.5
    m.reshape(-1)[0] = True
    return m.astype(np.float32)

  def images(rng):
    return r(rng, N, 8, 8, 3)

  return {
      'margin_loss': lambda g: (
          losses.margin_loss,
          [r(g, N, D), r(g, N, D) * 0.3, np.where(g.random(N) < 0.5, 1.0, -1.0).astype(np.float32)],
          [B, B, B], (0, 1)),
      'triplet_loss': lambda g: (
          losses.triplet_loss, [r(g, N, D), r(g, N, D), r(g, N, D)], [B, B, B], (0, 1, 2)),
      'info_nce': lambda g: (losses.info_nce, [r(g, N, D), r(g, N, D)], [B, B], (0, 1)),
      'info_nce_negatives': lambda g: (
          losses.info_nce, [r(g, N, D), r(g, N, D), r(g, 24, D)], [B, B, R], (0, 1, 2)),
      'nt_xent': lambda g: (losses.nt_xent, [r(g, N, D), r(g, N, D)], [B, B], (0, 1)),
      'moco_loss': lambda g: (
          losses.moco_loss, [r(g, N, D), r(g, N, D), r(g, 40, D)], [B, B, R], (0, 1, 2)),
      'nearest_neighbors': lambda g: (
          losses.nearest_neighbors, [r(g, N, D), r(g, 40, D)], [B, R], (0, 1)),
      'nearest_neighbors_k3': lambda g: (
          lambda z, s: losses.nearest_neighbors(z, s, k=3), [r(g, N, D), r(g, 40, D)], [B, R],
          (0, 1)),
      'byol_loss': lambda g: (losses.byol_loss, [r(g, N, D), r(g, N, D)], [B, B], (0, 1)),
      'simsiam_loss': lambda g: (losses.simsiam_loss, [r(g, N, D), r(g, N, D)], [B, B], (0, 1)),
      'mean_shift_loss_k1': lambda g: (
          lambda p, z, b: losses.mean_shift_loss(p, z, b, k=1),
          [r(g, N, D), r(g, N, D), r(g, 24, D)], [B, B, R], (0, 1, 2)),
      'mean_shift_loss_k5': lambda g: (
          lambda p, z, b: losses.mean_shift_loss(p, z, b, k=5),
          [r(g, N, D), r(g, N, D), r(g, 24, D)], [B, B, R], (0, 1, 2)),
      'dino_loss': lambda g: (
          losses.dino_loss, [r(g, 4, N, K), r(g, 2, N, K), r(g, K) * 0.1], [B1, B1, R], (0, 1, 2)),
      'dino_center': lambda g: (
          losses.dino_center, [r(g, K), r(g, 2, N, K)], [R, B1], (0, 1)),
      'ibot_patch_loss': lambda g: (
          losses.ibot_patch_loss, [r(g, N, 4, K), r(g, N, 4, K), mask(g, N, 4), r(g, K) * 0.1],
          [B, B, B, R], (0, 1, 3)),
      'ibot_patch_center': lambda g: (
          losses.ibot_patch_center, [r(g, K), r(g, N, 4, K)], [R, B], (0, 1)),
      'ibot_patch_center_mask': lambda g: (
          losses.ibot_patch_center, [r(g, K), r(g, N, 4, K), mask(g, N, 4)], [R, B, B], (0, 1)),
      'koleo_loss': lambda g: (losses.koleo_loss, [r(g, N, D)], [B], (0,)),
      'sinkhorn_knopp_teacher': lambda g: (
          lambda x: losses.sinkhorn_knopp_teacher(x, teacher_temp=0.1), [r(g, N, K) * 0.3], [B],
          (0,)),
      'ijepa_loss': lambda g: (
          losses.ijepa_loss, [r(g, N, 4, D), r(g, N, 4, D), mask(g, N, 4)], [B, B, B], (0, 1)),
      'vicreg_loss': lambda g: (
          losses.vicreg_loss, [r(g, N, D) * 0.5, r(g, N, D) * 0.7], [B, B], (0, 1)),
      'barlow_twins_loss': lambda g: (
          losses.barlow_twins_loss, [r(g, N, D), r(g, N, D)], [B, B], (0, 1)),
      'sinkhorn': lambda g: (losses.sinkhorn, [r(g, N, K) * 0.3], [B], (0,)),
      'swav_loss': lambda g: (losses.swav_loss, [r(g, 4, N, K) * 0.3], [B1], (0,)),
      'mae_loss': lambda g: (
          losses.mae_loss, [r(g, N, 4, 48), r(g, N, 4, 48), mask(g, N, 4)], [B, B, B], (0, 1)),
      'simmim_loss': lambda g: (
          losses.simmim_loss, [images(g), images(g), mask(g, N, 8, 8)], [B, B, B], (0, 1)),
      'beit_loss': lambda g: (
          losses.beit_loss,
          [r(g, N, 4, K), g.integers(0, K, size=(N, 4)).astype(np.int32), mask(g, N, 4)],
          [B, B, B], (0,)),
      'patchify': lambda g: (lambda x: losses.patchify(x, 4), [images(g)], [B], (0,)),
      'unpatchify': lambda g: (
          lambda x: losses.unpatchify(x, 4, 8, 8), [r(g, N, 4, 48)], [B], (0,)),
  }


CASES = _cases()


def _close(got, want):
  """rtol 1e-5; atol 1e-6, scaled up by the array's largest entry when it exceeds 1.

  A sharded reduction sums in another order: its float32 rounding is relative to the size of the
  summed terms, not of a small (cancelling) result, e.g. DINO's centre gradient entries.
  """
  want = np.asarray(want)
  scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * scale)


@pytest.fixture(scope='module')
def mesh():
  assert len(jax.devices()) >= 8, 'conftest.py must emulate 8 CPU devices'
  return Mesh(np.array(jax.devices()[:8]), ('data',))


@pytest.mark.parametrize('name', sorted(CASES))
def test_sharded_matches_single_device(name, mesh):
  f, args, specs, argnums = CASES[name](np.random.default_rng(sorted(CASES).index(name)))

  def value_and_grad(*a):
    return f(*a), jax.grad(lambda *b: _scalar(f(*b)), argnums=argnums)(*a)

  dev0 = jax.devices()[0]
  single = [jax.device_put(a, dev0) for a in args]
  sharded = [jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip(args, specs)]
  for x, s in zip(sharded, specs):
    assert len(x.sharding.device_set) == 8
    if s != R:  # the batch really is split, not replicated
      assert not x.sharding.is_fully_replicated
      assert x.addressable_shards[0].data.shape[list(s).index('data')] == N // 8

  want_val, want_grad = jax.jit(value_and_grad, compiler_options=FAST_COMPILE)(*single)
  got_val, got_grad = jax.jit(value_and_grad, compiler_options=FAST_COMPILE)(*sharded)
  jax.tree.map(_close, got_val, want_val)
  jax.tree.map(_close, got_grad, want_grad)
  assert len(jax.tree.leaves(got_grad)) == len(argnums)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves((got_val, got_grad)))
