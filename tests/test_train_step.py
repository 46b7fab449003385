"""The jitted train step: 1 device == 8 devices, the non-finite guard, optimizer masks."""

import functools
import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jssl import methods
from jssl.train import optim, sharding
from jssl.train import state as state_lib
from jssl.train import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(method: str):
  """configs/<method>.py's default preset, shrunk to a 1-block ResNet on 8 px views
  ('simclr+remat': with the blocks recomputed in the backward pass)."""
  method, _, option = method.partition('+')
  spec = importlib.util.spec_from_file_location(f'cfg_{method}',
                                                os.path.join(ROOT, 'configs', f'{method}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.model.update(width=4, stage_sizes=(1,))
  c.method.update(proj_hidden_dims=(16,), proj_dim=8)
  if method == 'byol':
    c.method.update(pred_hidden_dims=(16,))
  c.data.augment.image_size = 8
  c.model.remat = option == 'remat'
  return c


def _batch(method, n=16, seed=0):
  rng = np.random.default_rng(seed)
  return {k: rng.random((n,) + tuple(s), dtype=np.float32) for k, (s, _) in
          method.input_spec().items()}


@functools.lru_cache(maxsize=None)
def _env(name):
  """(method, tx, schedule, host copy of the initial state), built once per method."""
  config = tiny_config(name)
  method = methods.build(config, 100)
  tx, schedule = optim.build(config.optim, 16, 100, 2)
  mesh = sharding.make_mesh(jax.devices()[:1])
  return method, tx, schedule, jax.device_get(
      state_lib.create(method, tx, 0, sharding.replicated(mesh)))


@functools.lru_cache(maxsize=None)
def _step(name, n_devices):
  """(mesh, jitted step) over the first n devices; jit's cache keeps the compiled step."""
  method, tx, schedule, _ = _env(name)
  mesh = sharding.make_mesh(jax.devices()[:n_devices])
  return mesh, step_lib.make_train_step(method, tx, mesh, schedule)


def _setup(name, n_devices):
  """A fresh initial state replicated on n devices (the same values for every n)."""
  method, _, _, host = _env(name)
  mesh, train_step = _step(name, n_devices)
  return method, mesh, jax.device_put(host, sharding.replicated(mesh)), train_step


@pytest.mark.parametrize('name', ['simclr', 'byol', 'simclr+remat'])
def test_one_device_equals_eight_devices(name):
  assert jax.device_count() >= 8, 'tests/conftest.py sets 8 emulated CPU devices'
  results = {}
  for n in (1, 8):
    method, mesh, state, train_step = _setup(name, n)
    metrics = []
    for step in range(2):  # two steps: the second sees updated BN stats, EMA teacher, momentum
      state, m = train_step(state, sharding.put_batch(_batch(method, seed=step), mesh))
      metrics.append(m)
    assert len(state.params['backbone']['stem_conv']['kernel'].sharding.device_set) == n
    results[n] = jax.device_get((state, metrics))
  (s1, m1), (s8, m8) = results[1], results[8]
  for a, b in zip(m1, m8):
    assert float(a['finite']) == 1.0
    np.testing.assert_allclose(a['loss'], b['loss'], rtol=1e-5)
  assert int(s1.step) == int(s8.step) == 2
  for tree in ('params', 'batch_stats', 'method_state', 'opt_state'):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 getattr(s1, tree), getattr(s8, tree))
  # the steps really changed the parameters (the comparison is not vacuous)
  delta = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       _env(name)[3].params, s1.params)
  assert max(jax.tree.leaves(delta)) > 1e-4


def test_byol_target_follows_ema_of_online():
  method, mesh, state, train_step = _setup('byol', 1)
  init = jax.device_get(state)
  # at init the target is a copy of the online network
  jax.tree.map(np.testing.assert_array_equal, init.method_state['target_params'],
               {k: init.params[k] for k in ('backbone', 'projector')})
  # Step 0 has lr 0 (warm-up from 0): take it, then check step 1, whose update is not zero.
  state, _ = train_step(state, sharding.put_batch(_batch(method), mesh))
  before = jax.device_get(state)
  state, _ = train_step(state, sharding.put_batch(_batch(method), mesh))
  after = jax.device_get(state)
  online = {k: after.params[k] for k in ('backbone', 'projector')}
  moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                       {k: before.params[k] for k in ('backbone', 'projector')}, online)
  assert max(jax.tree.leaves(moved)) > 1e-3  # the online network really moved
  k, total = 1, method.total_steps
  tau = 1 - (1 - method.tau_base) * (math.cos(math.pi * k / total) + 1) / 2
  want = jax.tree.map(lambda t, o: tau * np.float64(t) + (1 - tau) * np.float64(o),
                      before.method_state['target_params'], online)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7),
               after.method_state['target_params'], want)
  # the same check with another base (0.99 for the preset's 0.98) fails: the test can tell
  assert method.tau_base == 0.98
  wrong = jax.tree.map(lambda t, o: 0.99 * t + 0.01 * o, before.method_state['target_params'],
                       online)
  assert not all(jax.tree.leaves(jax.tree.map(
      lambda a, b: np.allclose(a, b, rtol=1e-6, atol=1e-7),
      after.method_state['target_params'], wrong)))


def test_non_finite_step_keeps_the_old_state():
  method, mesh, state, train_step = _setup('simclr', 1)
  before = jax.device_get(state)
  bad = _batch(method)
  bad['view_0'][0, 0, 0, 0] = np.nan
  state, metrics = train_step(state, sharding.put_batch(bad, mesh))
  assert float(metrics['finite']) == 0.0 and not np.isfinite(float(metrics['grad_norm']))
  after = jax.device_get(state)
  assert int(after.step) == 0
  jax.tree.map(np.testing.assert_array_equal, before.params, after.params)
  jax.tree.map(np.testing.assert_array_equal, before.opt_state, after.opt_state)


def test_decay_mask_excludes_exactly_biases_and_norm_params():
  method = methods.build(tiny_config('byol'), 10)
  params = jax.eval_shape(lambda: method.init(jax.random.PRNGKey(0), _batch(method, 2))[0])
  mask = optim.decay_mask(params)
  flat = jax.tree_util.tree_flatten_with_path(mask)[0]
  assert flat
  for path, decayed in flat:
    names = [p.key for p in path]
    is_weight = names[-1] == 'kernel'
    assert decayed == is_weight, names
  other = {'LayerNorm_0': {'scale': 1.0, 'bias': 0.0}, 'norm': {'scale': 1.0},
           'Dense_0': {'kernel': 1.0, 'bias': 0.0}, 'ln1': {'scale': 1.0},
           'Conv_0': {'kernel': 1.0}, 'prototypes': {'kernel': 1.0}}
  assert optim.decay_mask(other) == {
      'LayerNorm_0': {'scale': False, 'bias': False}, 'norm': {'scale': False},
      'Dense_0': {'kernel': True, 'bias': False}, 'ln1': {'scale': False},
      'Conv_0': {'kernel': True}, 'prototypes': {'kernel': True}}


def test_lars_leaves_masked_params_unscaled_and_undecayed():
  params = {'dense': {'kernel': jnp.ones((2, 2)), 'bias': jnp.ones((2,))},
            'bn': {'scale': jnp.ones((2,))}}
  grads = jax.tree.map(jnp.ones_like, params)
  tx = optax.lars(1.0, weight_decay=0.5, weight_decay_mask=optim.decay_mask,
                  trust_coefficient=0.1, trust_ratio_mask=optim.decay_mask, momentum=0.0)
  updates, _ = tx.update(grads, tx.init(params), params)
  np.testing.assert_allclose(updates['dense']['bias'], -1.0)  # plain SGD: no decay, no trust
  np.testing.assert_allclose(updates['bn']['scale'], -1.0)
  # kernel: g + wd * w = 1.5, scaled by trust 0.1 * ||w|| / ||u|| = 0.1 * 2 / 3
  np.testing.assert_allclose(updates['dense']['kernel'], -1.5 * 0.1 * 2 / 3, rtol=1e-6)


def _solo_learn_lars_reference(params, grads_seq, lrs, wd, eta, momentum):
  """solo-learn's LARS with clip_lr and exclude_bias_n_norm, in float64 NumPy: for a weight,
  d = (g + wd w) * min(eta ||w|| / (||g + wd w|| lr) , 1); biases and norms: d = g; then
  momentum on the lr-scaled step as optax.lars has it, buf = m buf + lr d, w -= buf (torch's SGD
  scales after the momentum; the two agree at a constant lr)."""
  w = {k: np.asarray(v, np.float64) for k, v in params.items()}
  buf = {k: np.zeros_like(v) for k, v in w.items()}
  for grads, lr in zip(grads_seq, lrs):
    for k in w:
      g = np.asarray(grads[k], np.float64)
      if k == 'kernel':
        u = g + wd * w[k]
        ratio = eta * np.linalg.norm(w[k]) / (np.linalg.norm(u) * lr)
        g = u * min(ratio, 1.0)
      buf[k] = momentum * buf[k] + lr * g
      w[k] = w[k] - buf[k]
  return w


def test_lars_trust_clip_matches_solo_learn_reference():
  rng = np.random.default_rng(0)
  params = {'kernel': jnp.asarray(rng.normal(size=(4, 3)), jnp.float32),
            'bias': jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
  # Large then tiny gradients: the clip binds on the first steps (ratio > 1) and not later.
  grads_seq = [jax.tree.map(lambda p, s=s: jnp.asarray(rng.normal(size=p.shape) * s,
                                                        jnp.float32), params)
               for s in (1e-3, 1e-3, 10.0, 10.0, 1.0)]
  lrs = [0.5, 0.4, 0.3, 0.2, 0.1]
  schedule = lambda count: jnp.asarray(lrs)[count]
  tx = optim.lars_clipped(schedule, weight_decay=0.01, trust_coefficient=0.02, momentum=0.9,
                          nesterov=False)
  state, p = tx.init(params), params
  for g in grads_seq:
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
  want = _solo_learn_lars_reference(params, grads_seq, lrs, 0.01, 0.02, 0.9)
  for k in want:
    np.testing.assert_allclose(np.asarray(p[k], np.float64), want[k], rtol=1e-5, atol=1e-7)
  # Without the clip, optax.lars differs on the steps where the clip binds.
  plain = optax.lars(schedule, weight_decay=0.01, weight_decay_mask=optim.decay_mask,
                     trust_coefficient=0.02, trust_ratio_mask=optim.decay_mask, momentum=0.9)
  state, q = plain.init(params), params
  for g in grads_seq:
    updates, state = plain.update(g, state, q)
    q = optax.apply_updates(q, updates)
  assert not np.allclose(np.asarray(q['kernel']), want['kernel'], rtol=1e-3)


def test_build_uses_the_clipped_lars_when_trust_clip_is_set():
  config = tiny_config('simclr')
  config.optim.update(name='lars', trust_clip=True, trust_coefficient=0.02, weight_decay=0.0,
                      momentum=0.0, warmup_epochs=0.0)
  tx, _ = optim.build(config.optim, 256, 10, 0)
  params = {'Dense_0': {'kernel': jnp.ones((2, 2))}}
  huge = {'Dense_0': {'kernel': jnp.full((2, 2), 100.0)}}
  tiny = {'Dense_0': {'kernel': jnp.full((2, 2), 1e-6)}}
  lr = config.optim.lr
  up_huge, _ = tx.update(huge, tx.init(params), params)  # LARS binds: step 0.02 * ||w|| / ||g|| g
  np.testing.assert_allclose(up_huge['Dense_0']['kernel'], -0.02 * 2 / 200 * 100, rtol=1e-5)
  up_tiny, _ = tx.update(tiny, tx.init(params), params)  # the clip binds: the SGD step lr * g
  np.testing.assert_allclose(up_tiny['Dense_0']['kernel'], -lr * 1e-6, rtol=1e-5)


@pytest.mark.parametrize('scaling,want', [('linear', 0.3 * 512 / 256), ('sqrt', 0.3 * 512**0.5),
                                          ('none', 0.3)])
def test_lr_scaling(scaling, want):
  assert optim.scaled_lr(0.3, 512, scaling) == pytest.approx(want)


def test_warmup_cosine_schedule_and_optimizers_build():
  config = tiny_config('simclr')
  for name in optim.NAMES:
    config.optim.name = name
    config.optim.clip_norm = 1.0 if name == 'sgd' else 0.0
    tx, schedule = optim.build(config.optim, 256, 100, 10)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(config.optim.lr)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-7)
    params = {'w': {'kernel': jnp.ones((2, 2))}}
    updates, _ = tx.update(params, tx.init(params), params)
    assert updates['w']['kernel'].shape == (2, 2)
  with pytest.raises(ValueError, match='config.optim.name'):
    config.optim.name = 'adam'
    optim.build(config.optim, 256, 100, 10)
