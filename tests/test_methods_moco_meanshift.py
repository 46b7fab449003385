"""MoCo v2, MoCo v3 and MeanShift behind the method interface: losses on the methods' own
embeddings, queue / bank FIFO, momentum encoders, BN groups with Shuffle BN, MeanShift k=1 = BYOL,
1 device = 8 devices, presets."""

import dataclasses
import functools
import importlib.util
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_run

from jssl import losses, methods
from jssl.methods import ema, momentum
from jssl.methods.moco_v3 import PooledViT
from jssl.models import MLP, vit as vit_lib
from jssl.train import optim, sharding
from jssl.train import state as state_lib
from jssl.train import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ('moco_v2', 'moco_v3', 'mean_shift')
N = 16  # batch
SIZE = 24  # queue / bank rows: 16 does not divide 24, so the second push wraps around


def get_config(name, preset=None):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}',
                                                os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def tiny_config(name):
  """The default preset shrunk to a 1-block ResNet on 8 px views, 4 BN groups, 24-row queues."""
  c = get_config(name)
  c.model.update(width=4, stage_sizes=(1,))
  c.method.update(proj_hidden_dims=(16,), proj_dim=8)
  if name != 'moco_v2':
    c.method.update(pred_hidden_dims=(16,))
  if name == 'moco_v2':
    c.method.update(queue_size=SIZE, bn_groups=4)
  if name == 'mean_shift':
    c.method.update(bank_size=SIZE, bn_groups=4)
  c.data.augment.image_size = 8
  return c


def _batch(method, n=N, seed=0):
  rng = np.random.default_rng(seed)
  return {k: jnp.asarray(rng.random((n,) + tuple(s), dtype=np.float32))
          for k, (s, _) in method.input_spec().items()}


def _close(a, b, rtol=1e-5, atol=1e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


# XLA:CPU compiles the unrolled threefry of every initializer slowly (most of a tiny model's
# init compile); the states are created, and the train steps run, with the 'unsafe_rbg' PRNG.
PRNG = 'unsafe_rbg'


@functools.lru_cache(maxsize=None)
def _env(name):
  """(method, optimizer, schedule, host copy of a fresh TrainState), built once per method."""
  config = tiny_config(name)
  method = methods.build(config, 50)
  tx, schedule = optim.build(config.optim, N, 50, 2)
  mesh = sharding.make_mesh(jax.devices()[:1])
  with jax.default_prng_impl(PRNG):
    state = state_lib.create(method, tx, 0, sharding.replicated(mesh))
  return method, tx, schedule, jax.device_get(state)


def _built(name):
  """(method, batch, (params, batch_stats, method_state)) of the initial state of `_env`."""
  method, _, _, host = _env(name)
  return method, _batch(method), (host.params, host.batch_stats, host.method_state)


# ----------------------------------------------------------------------------- helpers


def test_momentum_schedule_matches_hand_computation():
  for k in (0, 1, 17, 50, 99, 100, 150):
    kk = min(k, 100)
    want = 0.999 - (0.999 - 0.99) * (math.cos(math.pi * kk / 100) + 1) / 2
    np.testing.assert_allclose(float(momentum.momentum_at(k, 100, 0.99, 0.999)), want, atol=1e-7)
    np.testing.assert_allclose(float(momentum.momentum_at(k, 100, 0.99, 1.0)),
                               float(ema.cosine_momentum(k, 100, 0.99)), atol=1e-7)
    assert float(momentum.momentum_at(k, 100, 0.999, 0.999)) == pytest.approx(0.999, abs=1e-7)


class _DenseBN(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.BatchNorm(use_running_average=False, momentum=0.9)(nn.Dense(3)(x))


def test_grouped_apply_is_batchnorm_per_group_of_the_shuffled_batch():
  model = _DenseBN()
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 12, 5))
  variables = model.init(jax.random.PRNGKey(1), x[0])

  def fn(xg):
    y, upd = model.apply(variables, xg, mutable=['batch_stats'])
    return y, upd['batch_stats']

  perm = momentum.shuffle(jax.random.PRNGKey(2), 12)
  np.testing.assert_array_equal(np.sort(perm[0]), np.arange(12))
  np.testing.assert_array_equal(perm[0][perm[1]], np.arange(12))

  @jax.jit
  def run(x, perm):
    out, stats = momentum.grouped_apply(fn, x, 3, perm)
    loop = [[fn(x[v][perm[0]][4 * g:4 * g + 4]) for g in range(3)] for v in range(2)]
    plain = [fn(x[v])[0] for v in range(2)]
    return (out, stats, loop, momentum.grouped_apply(fn, x, 1)[0], plain,
            momentum.grouped_apply(fn, x, 3)[0])

  out, stats, loop, out1, plain, unshuffled = jax.device_get(run(x, perm))
  want = np.zeros((2, 12, 3), np.float32)
  for v in range(2):
    for g in range(3):  # BN statistics of these 4 examples only, outputs in the input order
      want[v, np.asarray(perm[0][4 * g:4 * g + 4])] = loop[v][g][0]
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
  all_stats = [s for view in loop for _, s in view]
  _close(stats, jax.tree.map(lambda *s: sum(s) / len(s), *all_stats))
  # one group, no permutation: plain BatchNorm over each view
  np.testing.assert_allclose(out1, np.stack(plain), rtol=1e-5, atol=1e-6)
  # groups change the result (the statistics differ), and so does the shuffle
  assert not np.allclose(out1, unshuffled, atol=1e-3)
  assert not np.allclose(out, unshuffled, atol=1e-3)
  with pytest.raises(ValueError, match='bn_groups=5'):
    momentum.grouped_apply(fn, x, 5)


def test_bn_groups_on_device_boundaries_need_no_cross_device_reduction():
  """With the batch sharded on 8 devices and 8 (or 16) groups, each group's BatchNorm runs on its
  own device (per-GPU BN, as MoCo's); one global group needs an all-reduce."""
  model = _DenseBN()
  x = jnp.ones((1, 64, 5))
  variables = model.init(jax.random.PRNGKey(0), x[0])

  def fn(xg):
    y, upd = model.apply(variables, xg, mutable=['batch_stats'])
    return y, upd['batch_stats']

  mesh = sharding.make_mesh(jax.devices()[:8])
  spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, 'data'))

  def hlo(groups):
    f = jax.jit(lambda x: momentum.grouped_apply(fn, x, groups)[0], in_shardings=spec)
    return f.lower(x).compile().as_text()

  assert 'all-reduce' in hlo(1)
  assert 'all-reduce' not in hlo(8) and 'all-reduce' not in hlo(16)


# ----------------------------------------------------------------------------- MoCo v2


def _moco_v2_keys(method, state, batch, perm=None):
  x = jnp.stack([method.normalize(batch['view_0']), method.normalize(batch['view_1'])])
  k, _ = method.encode(state['key_params'], state['key_batch_stats'], x, perm)
  return losses.normalize(k)


@functools.lru_cache(maxsize=None)
def _moco_v2_run():
  """Two loss_fn calls (the second on the first's state) and the reference computations."""
  method, batch, (params, stats, state) = _built('moco_v2')
  batch2 = _batch(method, seed=1)
  rng1, rng2 = jax.random.PRNGKey(5), jax.random.PRNGKey(6)

  @jax.jit
  def run(params, stats, state):
    loss, (new_stats, s1, metrics) = method.loss_fn(params, stats, state, batch, rng1, 0)
    _, (_, s2, _) = method.loss_fn(params, stats, s1, batch2, rng2, 1)
    x = jnp.stack([method.normalize(batch['view_0']), method.normalize(batch['view_1'])])
    q, _ = method.encode(params, stats, x)
    k = _moco_v2_keys(method, state, batch, momentum.shuffle(rng1, N))
    k2 = _moco_v2_keys(method, state, batch2, momentum.shuffle(rng2, N))
    plain = _moco_v2_keys(method, state, batch)  # no shuffle
    want = (losses.moco_loss(q[0], k[1], state['queue_1']['items'], temperature=0.2) +
            losses.moco_loss(q[1], k[0], state['queue_0']['items'], temperature=0.2)) / 2
    # the paper's single direction, one BN group: plain forward passes of each view
    single = dataclasses.replace(method, symmetric=False, bn_groups=1, tau_base=0.999,
                                 tau_final=0.999)
    st1 = {key: v for key, v in state.items() if key != 'queue_0'}
    loss_1, (_, new_1, metrics_1) = single.loss_fn(params, stats, st1, batch, None, 3)
    (_, qa, _), _ = method.model.apply({'params': params, 'batch_stats': stats},
                                       method.normalize(batch['view_0']), train=True,
                                       mutable=['batch_stats'])
    (_, ka, _), _ = method.model.apply({'params': state['key_params'],
                                        'batch_stats': state['key_batch_stats']},
                                       method.normalize(batch['view_1']), train=True,
                                       mutable=['batch_stats'])
    want_1 = losses.moco_loss(qa, ka, state['queue_1']['items'], temperature=0.2)
    moved = jax.tree.map(lambda p: p + 1.0, params)
    _, after_1 = single.update_state(params, moved, new_1, 7)
    _, after = method.update_state(params, moved, s1, 7)
    return dict(loss=loss, want=want, new_stats=new_stats, s1=s1, s2=s2, metrics=metrics,
                k=k, k2=k2, plain=plain, loss_1=loss_1, want_1=want_1, new_1=new_1,
                ka=losses.normalize(ka), metrics_1=metrics_1, key_1=after_1['key_params'],
                key=after['key_params'])

  return method, params, stats, state, jax.device_get(run(params, stats, state))


def test_moco_v2_loss_is_moco_loss_of_its_embeddings():
  method, _, stats, state, r = _moco_v2_run()
  assert method.symmetric and method.bn_groups == 4 and method.queue_size == SIZE
  assert set(state) == {'key_params', 'key_batch_stats', 'queue_0', 'queue_1'}
  np.testing.assert_allclose(r['loss'], r['want'], rtol=1e-5)
  np.testing.assert_allclose(r['metrics']['tau'], 0.99, rtol=1e-6)  # cosine 0.99 -> 0.999
  assert all(jax.tree.leaves(jax.tree.map(lambda a, b: bool(np.any(a != b)), stats,
                                          r['new_stats'])))
  # Shuffle BN: the keys of the shuffled batch differ from the unshuffled ones
  assert not np.allclose(r['k'], r['plain'], atol=1e-4)
  # single direction (the paper): moco_loss(q0, k1, queue_1), only view 1's keys pushed
  np.testing.assert_allclose(r['loss_1'], r['want_1'], rtol=1e-5)
  assert set(r['new_1']) == {'key_params', 'key_batch_stats', 'queue_1'}
  np.testing.assert_allclose(r['new_1']['queue_1']['items'][:N], r['ka'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(r['metrics_1']['tau'], 0.999, rtol=1e-7)


def test_moco_v2_queue_fifo_and_wrap_around():
  _, _, _, state, r = _moco_v2_run()
  for v in (0, 1):  # a full queue of random unit vectors at init
    assert int(state[f'queue_{v}']['count']) == SIZE and int(state[f'queue_{v}']['ptr']) == 0
    np.testing.assert_allclose(np.linalg.norm(state[f'queue_{v}']['items'], axis=1), 1.0,
                               rtol=1e-5)
  s1, s2, k, k2 = r['s1'], r['s2'], r['k'], r['k2']
  for v in (0, 1):  # first push: rows 0..15 <- this batch's keys, 16..23 untouched
    items = s1[f'queue_{v}']['items']
    np.testing.assert_allclose(items[:N], k[v], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(items[N:], state[f'queue_{v}']['items'][N:])
    assert int(s1[f'queue_{v}']['ptr']) == N and int(s1[f'queue_{v}']['count']) == SIZE
  for v in (0, 1):  # the second push wraps: rows 16..23, then 0..7; ptr = 32 mod 24 = 8
    items = s2[f'queue_{v}']['items']
    np.testing.assert_allclose(items[N:], k2[v][:SIZE - N], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(items[:2 * N - SIZE], k2[v][SIZE - N:], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(items[2 * N - SIZE:N], s1[f'queue_{v}']['items'][8:N])
    assert int(s2[f'queue_{v}']['ptr']) == 2 * N - SIZE
    ordered = np.asarray(ema.queue_ordered(s2[f'queue_{v}']))
    np.testing.assert_allclose(ordered[-N:], k2[v], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ordered[-N - 8:-N], k[v][8:], rtol=1e-5, atol=1e-6)


def test_moco_v2_key_encoder_ema():
  method, params, _, state, r = _moco_v2_run()
  tau = float(momentum.momentum_at(7, 50, 0.99, 0.999))
  _close(r['key'], jax.tree.map(lambda t: tau * t + (1 - tau) * (t + 1.0), state['key_params']))
  _close(r['key_1'], jax.tree.map(lambda t: 0.999 * t + 0.001 * (t + 1.0),
                                  state['key_params']))
  jax.tree.map(np.testing.assert_array_equal, state['key_params'], params)  # a copy at init
  with pytest.raises(ValueError, match='needs an rng'):
    jax.eval_shape(lambda: method.loss_fn(params, r['new_stats'], state, _built('moco_v2')[1],
                                          None, 0))


# ----------------------------------------------------------------------------- MoCo v3


def test_moco_v3_loss_is_scaled_symmetric_info_nce_and_ema():
  method, batch, (params, stats, state) = _built('moco_v3')
  assert set(state) == {'target_params', 'target_batch_stats'}
  t = method.temperature

  @jax.jit
  def run(params, stats, state):
    loss, (_, new_state, metrics) = method.loss_fn(params, stats, state, batch, None, 10)
    q, k = [], []
    for view in ('view_0', 'view_1'):  # each view is its own BatchNorm batch
      x = method.normalize(batch[view])
      (_, _, p), _ = method.online.apply({'params': params, 'batch_stats': stats}, x,
                                         train=True, mutable=['batch_stats'])
      (_, z, _), _ = method.target.apply({'params': state['target_params'],
                                          'batch_stats': state['target_batch_stats']}, x,
                                         train=True, mutable=['batch_stats'])
      q.append(p)
      k.append(z)
    want = 2 * t * (losses.info_nce(q[0], k[1], temperature=t) +
                    losses.info_nce(q[1], k[0], temperature=t))
    moved = jax.tree.map(lambda p: p + 1.0, params)
    return loss, want, metrics, method.update_state(params, moved, new_state, 10)[1]

  loss, want, metrics, after = run(params, stats, state)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  tau = 1 - (1 - 0.99) * (math.cos(math.pi * 11 / 50) + 1) / 2  # m(step + 1)
  np.testing.assert_allclose(metrics['tau'], tau, rtol=1e-6)
  _close(after['target_params'], jax.tree.map(lambda o: tau * o + (1 - tau) * (o + 1.0),
                                              state['target_params']))


def test_moco_v3_vit_backbone_with_frozen_patch_embedding():
  backbone = PooledViT(width=16, depth=1, num_heads=2, patch_size=4)
  head = lambda last_bn: MLP((16,), 8, last_bn=last_bn)
  method = methods.moco_v3.MoCoV3(backbone=backbone, projector=head(True),
                                  predictor=head(True), freeze_patch_embed=True,
                                  total_steps=50, image_size=8)
  batch = _batch(method, n=6)

  @jax.jit
  def run(batch):
    params, stats, state = method.init(jax.random.PRNGKey(0), batch)
    grads = jax.grad(lambda p: method.loss_fn(p, stats, state, batch, None, 0)[0])(params)
    moved = jax.tree.map(lambda p: p + 1.0, params)
    new_params, after = method.update_state(params, moved, state, 0)
    return (params, stats, grads, new_params, after,
            method.features(params, stats, batch['view_0']))

  with jax.default_prng_impl(PRNG):
    params, stats, grads, new_params, after, feats = run(batch)
  assert 'backbone' not in stats and 'patch_embed' in params['backbone']
  assert not np.any(grads['backbone']['patch_embed']['kernel'])
  assert np.any(grads['backbone']['block0']['attn']['qkv']['kernel'])
  _close(new_params['backbone']['patch_embed'], params['backbone']['patch_embed'])
  _close(new_params['backbone']['cls'], params['backbone']['cls'] + 1.0)
  _close(after['target_params']['backbone']['patch_embed'], params['backbone']['patch_embed'])
  assert feats.shape == (6, 16)
  # the imagenet_vit preset: MoCo v3's ViT-S/16 (12 heads), 3-layer projector
  config = get_config('moco_v3', 'imagenet_vit')
  big = methods.build(config, 1000)
  assert isinstance(big.backbone, PooledViT) and isinstance(big.backbone, vit_lib.ViT)
  assert (big.backbone.width, big.backbone.depth, big.backbone.num_heads,
          big.backbone.patch_size) == (384, 12, 12, 16)
  assert big.freeze_patch_embed and big.projector.hidden_dims == (4096, 4096)
  assert big.projector.last_bn and big.predictor.last_bn and big.temperature == 0.2


# ----------------------------------------------------------------------------- MeanShift


def test_mean_shift_with_k1_is_byol():
  method, batch, (params, stats, state) = _built('mean_shift')
  asym = dataclasses.replace(method, k=1, bn_groups=1)
  # symmetric: both views' targets are pushed, so the bank must hold 2N rows
  sym = dataclasses.replace(method, k=1, bn_groups=1, symmetric=True, tau_final=1.0,
                            bank_size=2 * SIZE)
  sym_state = dict(state, bank=ema.queue_init(2 * SIZE, 8, items=jnp.tile(
      state['bank']['items'], (2, 1))))
  byol = methods.BYOL(backbone=method.backbone, projector=method.projector,
                      predictor=method.predictor, total_steps=method.total_steps,
                      tau_base=0.99, image_size=method.image_size)

  @jax.jit
  def run(params, stats, state, sym_state):
    # asymmetric (the paper's layout): byol_loss of the online view_0 vs the target view_1
    loss, _ = asym.loss_fn(params, stats, state, batch, None, 0)
    (_, _, p), _ = method.online.apply({'params': params, 'batch_stats': stats},
                                       method.normalize(batch['view_0']), train=True,
                                       mutable=['batch_stats'])
    (_, z, _), _ = method.target.apply({'params': state['target_params'],
                                        'batch_stats': state['target_batch_stats']},
                                       method.normalize(batch['view_1']), train=True,
                                       mutable=['batch_stats'])
    # symmetric: jssl's BYOL method on the same networks, parameters and batch
    ms = jax.value_and_grad(sym.loss_fn, has_aux=True)(params, stats, sym_state, batch, None, 3)
    by = jax.value_and_grad(byol.loss_fn, has_aux=True)(params, stats, sym_state, batch, None,
                                                        3)
    moved = jax.tree.map(lambda p: p + 1.0, params)
    t_ms = sym.update_state(params, moved, ms[0][1][1], 3)[1]['target_params']
    t_by = byol.update_state(params, moved, by[0][1][1], 3)[1]['target_params']
    return loss, losses.byol_loss(p, z), ms, by, t_ms, t_by

  loss, want, ms, by, t_ms, t_by = run(params, stats, state, sym_state)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  (l_ms, (bs_ms, st_ms, _)), g_ms = ms
  (l_by, (bs_by, st_by, _)), g_by = by
  np.testing.assert_allclose(l_ms, l_by, rtol=1e-6)
  _close(bs_ms, bs_by)
  _close(st_ms['target_batch_stats'], st_by['target_batch_stats'])
  _close(g_ms, g_by, rtol=1e-4, atol=1e-6)
  _close(t_ms, t_by)
  assert int(st_ms['bank']['ptr']) == 2 * N  # z(view_0) and z(view_1) pushed


def test_mean_shift_loss_and_bank_fifo():
  method, batch, (params, stats, state) = _built('mean_shift')
  assert not method.symmetric and method.k == 5 and method.bn_groups == 4
  assert set(state) == {'target_params', 'target_batch_stats', 'bank'}
  assert int(state['bank']['count']) == SIZE
  batch2 = _batch(method, seed=1)
  rng1, rng2 = jax.random.PRNGKey(7), jax.random.PRNGKey(8)

  @jax.jit
  def run(params, stats, state):
    loss, (_, s1, metrics) = method.loss_fn(params, stats, state, batch, rng1, 0)
    loss2, (_, s2, _) = method.loss_fn(params, stats, s1, batch2, rng2, 1)
    p, z, _, _ = method.embed(params, stats, state, batch, rng1)
    p2, z2, _, _ = method.embed(params, stats, s1, batch2, rng2)
    want = losses.mean_shift_loss(p, z, state['bank']['items'], k=5)
    want2 = losses.mean_shift_loss(p2, z2, s1['bank']['items'], k=5)
    moved = jax.tree.map(lambda p: p + 1.0, params)
    after = method.update_state(params, moved, s1, 30)[1]
    return loss, want, loss2, want2, metrics, s1, s2, z, z2, after

  loss, want, loss2, want2, metrics, s1, s2, z, z2, after = jax.device_get(
      run(params, stats, state))
  np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(loss2, want2, rtol=1e-5)
  np.testing.assert_allclose(metrics['tau'], 0.99, rtol=1e-7)
  np.testing.assert_allclose(s1['bank']['items'][:N], z, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(s1['bank']['items'][N:], state['bank']['items'][N:])
  assert int(s2['bank']['ptr']) == 2 * N - SIZE
  np.testing.assert_allclose(ema.queue_ordered(s2['bank'])[-N:], z2, rtol=1e-5, atol=1e-6)
  # constant momentum 0.99
  _close(after['target_params'], jax.tree.map(lambda t: 0.99 * t + 0.01 * (t + 1.0),
                                              state['target_params']))


# ----------------------------------------------------------------------------- engine


# Each case compiles the train step twice (~12 s of CPU each); MoCo v2's case (Shuffle BN over
# BN groups, the property that needs checking) stays in the fast set, the other two are slow.
@pytest.mark.parametrize('name', ['moco_v2', pytest.param('moco_v3', marks=pytest.mark.slow),
                                  pytest.param('mean_shift', marks=pytest.mark.slow)])
def test_one_device_equals_eight_devices(name):
  """state.create + make_train_step: two steps of batch 16 on 1 device and on 8 emulated
  devices agree (metrics, params, BN statistics, method state, optimizer state). The BN groups
  (4 of 4 examples) are cut from the global batch and the shuffle is drawn from the replicated
  step rng, so Shuffle BN gives the same step on any device count."""
  assert jax.device_count() >= 8, 'tests/conftest.py sets 8 emulated CPU devices'
  method, tx, schedule, host = _env(name)
  results = {}
  for n in (1, 8):
    mesh = sharding.make_mesh(jax.devices()[:n])
    train_step = step_lib.make_train_step(method, tx, mesh, schedule)
    state = jax.device_put(host, sharding.replicated(mesh))
    metrics = []
    with jax.default_prng_impl(PRNG):  # the state's rng key; loss_fn draws the BN shuffle
      for step in range(2):  # the second step sees the pushed queue, moved EMA, BN statistics
        state, m = train_step(state, sharding.put_batch(_batch(method, seed=step), mesh))
        metrics.append(m)
    assert int(state.step) == 2
    results[n] = jax.device_get((state, metrics))
  (s1, m1), (s8, m8) = results[1], results[8]
  for a, b in zip(m1, m8):
    assert float(a['finite']) == 1.0
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=k)
  for tree in ('params', 'batch_stats', 'method_state', 'opt_state'):
    # atol 5e-5: BatchNorm over groups of 4 examples amplifies the float noise of the sharded
    # reductions' order (seen: 1.7e-5 on a stem kernel entry after two steps)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5),
                 getattr(s1, tree), getattr(s8, tree))
  delta = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       host.params, s1.params)
  assert max(jax.tree.leaves(delta)) > 1e-4
  if name != 'moco_v3':
    queue = s1.method_state['queue_1' if name == 'moco_v2' else 'bank']
    assert int(queue['ptr']) == 2 * N - SIZE


@pytest.mark.parametrize('name', NAMES)
def test_presets_build(name):
  from jssl.train.validate import validate  # pylint: disable=g-import-not-at-top
  presets = ('tiny', 'cifar10', 'imagenet') + (('imagenet_vit',) if name == 'moco_v3' else ())
  for preset in presets:
    config = get_config(name, preset)
    validate(config)
    method = methods.build(config, 1000)
    assert method.name == name and method.total_steps == 1000
    size = 224 if preset.startswith('imagenet') else 32
    assert method.input_spec()['view_0'][0] == (size, size, 3)
    if preset == 'imagenet' and name != 'moco_v3':  # batch 256: 8 groups of 32
      assert config.batch_size // method.bn_groups == 32
  with pytest.raises(ValueError, match='unknown preset'):
    get_config(name, 'cifar100')


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMES)
def test_tiny_run_learns_without_collapse(name, tmp_path):
  """The tiny preset for 2 epochs on the embedded CIFAR-10 subset (minutes on 2 CPU cores): the
  trained features do not collapse (per-dimension std of the normalized features well above 0)
  and their kNN top-1 beats the randomly initialized network's."""
  tiny_run.assert_learns_without_collapse(get_config(name), tmp_path)
