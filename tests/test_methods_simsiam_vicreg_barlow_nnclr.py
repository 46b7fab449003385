"""SimSiam, VICReg, Barlow Twins and NNCLR behind the method interface: losses on the methods'
own embeddings, NNCLR's support queue, the optimizer groups, 1 device == 8 devices, presets."""

import dataclasses
import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses, methods
from jssl.methods import base, ema
from jssl.methods import nnclr as nnclr_lib
from jssl.train import optim, param_groups, sharding
from jssl.train import state as state_lib
from jssl.train import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ('simsiam', 'vicreg', 'barlow_twins', 'nnclr')
CLASSES = {'simsiam': 'SimSiam', 'vicreg': 'VICReg', 'barlow_twins': 'BarlowTwins',
           'nnclr': 'NNCLR'}
SUPPORT = 40  # NNCLR's test support set: 16-row pushes wrap around mid-push (40 % 16 != 0)


def get_config(name: str, preset=None):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}',
                                                os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def tiny_config(name: str):
  """The default preset shrunk to a 1-block ResNet of width 4 on 8 px views."""
  c = get_config(name)
  c.model.update(width=4, stage_sizes=(1,))
  c.method.update(proj_hidden_dims=(16, 16), proj_dim=8)
  if name in ('simsiam', 'nnclr'):
    c.method.update(pred_hidden_dims=(16,))
  if name == 'nnclr':
    c.method.update(support_size=SUPPORT)
  c.data.augment.image_size = 8
  return c


def _batch(method, n=16, seed=0):
  rng = np.random.default_rng(seed)
  return {k: rng.random((n,) + tuple(s), dtype=np.float32) for k, (s, _) in
          method.input_spec().items()}


# XLA:CPU compiles the unrolled threefry of every initializer slowly (most of a tiny model's
# init); the tests create their states with the 'unsafe_rbg' PRNG instead (none of these
# methods draws random numbers in loss_fn), and run the steps under the same implementation.
PRNG = 'unsafe_rbg'


@functools.lru_cache(maxsize=None)
def _env(name):
  """(method, tx, schedule, host copy of the initial TrainState) of the shrunk config, the
  optimizer with the method's groups (jssl.train.param_groups)."""
  config = tiny_config(name)
  method = methods.build(config, 100)
  tx, schedule = param_groups.build(config.optim, 16, 100, 2,
                                    getattr(method, 'optim_groups', tuple)())
  mesh = sharding.make_mesh(jax.devices()[:1])
  with jax.default_prng_impl(PRNG):
    state = state_lib.create(method, tx, 0, sharding.replicated(mesh))
  return method, tx, schedule, jax.device_get(state)


@functools.lru_cache(maxsize=None)
def _built(name):
  """(method, batch, (params, batch_stats, method_state), probe): `probe(params, stats, state,
  batch)` is one jitted forward pass returning what the tests look at (one compile each)."""
  method, _, _, host = _env(name)
  batch = _batch(method)

  def probe(params, stats, state, batch):
    loss, (new_stats, new_state, metrics) = method.loss_fn(params, stats, state, batch, None, 0)
    out = dict(loss=loss, new_stats=new_stats, new_state=new_state, metrics=metrics,
               features=method.features(params, stats, batch['view_0']))
    emb = method.embed(params, stats, batch)
    out['z1'], out['z2'] = emb[0]
    if name in ('simsiam', 'nnclr'):
      out['p1'], out['p2'] = emb[1]
    if name == 'nnclr':  # d loss / d queue items: nothing may flow into the queue
      out['queue_grad'] = jax.grad(lambda items: method.loss_fn(
          params, stats, {'support': dict(state['support'], items=items)}, batch, None,
          0)[0])(state['support']['items'])
    return out

  return method, batch, (host.params, host.batch_stats, host.method_state), jax.jit(probe)


@pytest.mark.parametrize('name', NAMES)
def test_build_input_spec_and_features(name):
  method, batch, (params, stats, state), probe = _built(name)
  assert type(method).__name__ == CLASSES[name] and isinstance(method, base.Method)
  assert method.name == name
  assert method.input_spec() == {'view_0': ((8, 8, 3), jnp.float32),
                                 'view_1': ((8, 8, 3), jnp.float32)}
  out = probe(params, stats, state, batch)
  assert out['features'].shape == (16, 4)
  assert set(params) == ({'backbone', 'projector', 'predictor'}
                         if name in ('simsiam', 'nnclr') else {'backbone', 'projector'})
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, out['new_stats'])
  assert all(jax.tree.leaves(changed))  # batch statistics were updated
  np.testing.assert_allclose(out['metrics']['loss'], out['loss'])


@pytest.mark.parametrize('name', ['simsiam', 'vicreg', 'barlow_twins'])
def test_loss_is_the_jssl_loss_of_the_methods_embeddings(name):
  method, batch, (params, stats, state), probe = _built(name)
  assert state == {}
  out = probe(params, stats, state, batch)
  assert out['new_state'] == {}
  z1, z2, loss, metrics = out['z1'], out['z2'], out['loss'], out['metrics']
  if name == 'simsiam':
    want = (losses.simsiam_loss(out['p1'], z2) / 2 + losses.simsiam_loss(out['p2'], z1) / 2)
    assert set(metrics) == {'loss', 'z_std'}
  elif name == 'vicreg':
    want, terms = losses.vicreg_loss(z1, z2, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0)
    assert set(metrics) == {'loss', 'invariance', 'variance', 'covariance'}
    for k, v in terms.items():
      np.testing.assert_allclose(metrics[k], v, rtol=1e-5)
    np.testing.assert_allclose(loss, 25 * terms['invariance'] + 25 * terms['variance'] +
                               terms['covariance'], rtol=1e-5)
  else:
    want = 0.1 * losses.barlow_twins_loss(z1, z2, lambd=0.0051)
    np.testing.assert_allclose(metrics['barlow_twins'], want / 0.1, rtol=1e-5)
  np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_simsiam_projector_last_bn_has_no_affine_and_z_std_metric():
  method, batch, (params, stats, state), probe = _built('simsiam')
  proj = params['projector']
  assert set(proj) == {'dense1', 'bn1', 'dense2', 'bn2', 'dense3'}  # bn3: no scale, no bias
  assert 'bias' not in proj['dense3'] and set(stats['projector']) == {'bn1', 'bn2', 'bn3'}
  out = probe(params, stats, state, batch)
  z1, z2 = np.asarray(out['z1']), np.asarray(out['z2'])
  z = np.concatenate([z1, z2])  # BN over both views in training mode: zero mean, unit variance
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(z.var(0), 1, rtol=1e-3)
  n = lambda z: z / np.linalg.norm(z, axis=1, keepdims=True)
  want = (n(z1).std(0).mean() + n(z2).std(0).mean()) / 2
  np.testing.assert_allclose(out['metrics']['z_std'], want, rtol=1e-5)


def _unit(z):
  z = np.asarray(z, np.float64)
  return z / np.linalg.norm(z, axis=1, keepdims=True)


def test_nnclr_loss_uses_the_exact_nearest_support_rows():
  method, batch, (params, stats, _), probe = _built('nnclr')
  rng = np.random.default_rng(1)
  items = rng.normal(size=(SUPPORT, 8)).astype(np.float32)
  queue = {'items': jnp.asarray(items), 'ptr': jnp.int32(8), 'count': jnp.int32(SUPPORT)}
  out = probe(params, stats, {'support': queue}, batch)
  z1, z2 = _unit(out['z1']), _unit(out['z2'])
  nn1 = items[np.argmax(z1 @ _unit(items).T, axis=1)]  # exact support rows, as stored
  nn2 = items[np.argmax(z2 @ _unit(items).T, axis=1)]
  want = (losses.info_nce(nn1, out['p2'], temperature=0.2) / 2 +
          losses.info_nce(nn2, out['p1'], temperature=0.2) / 2)
  np.testing.assert_allclose(out['loss'], want, rtol=1e-5)
  np.testing.assert_allclose(out['metrics']['support_filled'], 1.0)
  # the push: this batch's normalized z1 at rows 8..23, nothing else touched
  new = out['new_state']['support']
  np.testing.assert_allclose(new['items'][8:24], z1, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(np.delete(np.asarray(new['items']), np.s_[8:24], axis=0),
                                np.delete(items, np.s_[8:24], axis=0))
  assert int(new['ptr']) == 24 and int(new['count']) == SUPPORT
  np.testing.assert_array_equal(out['queue_grad'], 0.0)  # no gradient flows into the queue


def test_nnclr_partial_queue_never_picks_an_empty_row():
  queue = ema.queue_init(8, 3)
  z = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
  # empty queue: the batch itself is the support, each row is its own neighbour
  np.testing.assert_array_equal(losses.nearest_neighbors(z, nnclr_lib.filled_support(queue, z)),
                                z)
  # three filled rows, all at negative cosine to the queries: a zero row (cosine 0) would win
  filled = jnp.asarray([[-1.0, -0.2, 0.0], [-0.3, -1.0, 0.1], [-1.0, -1.0, -1.0]])
  queue = ema.queue_push(queue, filled)
  support = nnclr_lib.filled_support(queue, z)
  assert support.shape == (8, 3)
  np.testing.assert_array_equal(support, filled[np.arange(8) % 3])
  np.testing.assert_array_equal(losses.nearest_neighbors(z, support), filled[np.array([1, 0])])
  # a full queue is searched as it is
  full = ema.queue_push(ema.queue_push(queue, filled), filled[:2])
  assert int(full['count']) == 8
  np.testing.assert_array_equal(nnclr_lib.filled_support(full, z), full['items'])


def test_nnclr_queue_fifo_and_wrap_around_over_steps():
  """Five steps of loss_fn: the queue holds the newest 40 normalized view-1 projections, in
  push order, written at ptr and wrapping around mid-push (16-row pushes into 40 rows)."""
  _, _, (params, stats, state), probe = _built('nnclr')
  assert int(state['support']['count']) == 0
  pushed, fills = [], []
  for k in range(5):
    out = probe(params, stats, state, _batch(_built('nnclr')[0], seed=10 + k))
    pushed.append(_unit(out['z1']))
    state, stats = out['new_state'], out['new_stats']
    fills.append(float(out['metrics']['support_filled']))
    rows = np.concatenate(pushed)
    q = state['support']
    assert int(q['ptr']) == len(rows) % SUPPORT
    assert int(q['count']) == min(len(rows), SUPPORT)
    want = np.zeros((SUPPORT, 8), np.float32)
    for i, row in enumerate(rows):  # row i lands in slot i % size: the newest win
      want[i % SUPPORT] = row
    np.testing.assert_allclose(q['items'], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ema.queue_ordered(q), rows[-SUPPORT:], rtol=1e-5, atol=1e-6)
  assert fills == pytest.approx([0.0, 16 / 40, 32 / 40, 1.0, 1.0])


def _run_tx(tx, params, steps):
  """The updates of `steps` optimizer steps with all-ones gradients at fixed params."""
  grads = jax.tree.map(jnp.ones_like, params)
  update = jax.jit(tx.update)
  opt_state = tx.init(params)
  for _ in range(steps):
    updates, opt_state = update(grads, opt_state, params)
  return updates


def _small_params():
  """A params tree shaped like the methods' (a few leaves: the optimizer compiles fast)."""
  rng = np.random.default_rng(0)
  leaf = lambda *shape: jnp.asarray(rng.normal(size=shape), jnp.float32)
  return {'backbone': {'stem_conv': {'kernel': leaf(3, 3, 3, 4)},
                       'stem_bn': {'scale': leaf(4), 'bias': leaf(4)}},
          'projector': {'dense1': {'kernel': leaf(4, 6)}, 'bn1': {'scale': leaf(6),
                                                                   'bias': leaf(6)}},
          'predictor': {'dense1': {'kernel': leaf(6, 5)}, 'bn1': {'scale': leaf(5),
                                                                   'bias': leaf(5)},
                        'dense2': {'kernel': leaf(5, 6), 'bias': leaf(6)}}}


def test_simsiam_predictor_keeps_a_constant_lr():
  method, _, (params, _, _), _ = _built('simsiam')
  groups = method.optim_groups()
  assert groups == ({'name': 'predictor', 'select': 'predictor', 'lr_mult': 1.0,
                     'schedule': 'constant'},)
  labels = param_groups.labels(params, groups)
  assert set(jax.tree.leaves(labels['predictor'])) == {'predictor'}
  assert set(jax.tree.leaves({k: labels[k] for k in ('backbone', 'projector')})) == {'default'}
  config = tiny_config('simsiam')  # SGD, momentum 0.9, lr 0.5, wd 1e-5, cosine
  tx, schedule = param_groups.build(config.optim, 256, 100, 10, groups)
  ref, ref_schedule = optim.build(config.optim, 256, 100, 10)
  peak = float(ref_schedule(10))
  assert peak == pytest.approx(0.5) and float(ref_schedule(59)) < 0.7 * peak
  assert float(schedule(59)) == float(ref_schedule(59))  # the logged lr: the default group's
  params = _small_params()
  u, u_ref = _run_tx(tx, params, 60), _run_tx(ref, params, 60)
  # the backbone and projector follow the warm-up + cosine schedule as without groups ...
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               {k: u[k] for k in ('backbone', 'projector')},
               {k: u_ref[k] for k in ('backbone', 'projector')})
  # ... the predictor's step is the peak lr times the momentum buffer of (g + wd * w)
  buf = sum(0.9**j for j in range(60))
  kernel = params['predictor']['dense2']['kernel']
  np.testing.assert_allclose(u['predictor']['dense2']['bias'], -peak * buf, rtol=1e-5)
  np.testing.assert_allclose(u['predictor']['dense2']['kernel'],
                             -peak * buf * (1 + 1e-5 * kernel), rtol=1e-5)
  config.method.fix_pred_lr = False
  assert methods.build(config, 10).optim_groups() == ()


def test_barlow_twins_bias_and_norm_lr_group():
  assert get_config('barlow_twins', 'imagenet').method.bias_lr_mult == pytest.approx(0.0048 / 0.2)
  method, _, (params, _, _), _ = _built('barlow_twins')
  assert method.optim_groups() == ()  # solo-learn's CIFAR / tiny: one learning rate
  groups = ({'name': 'bias_and_norm', 'select': 'bias_and_norm', 'lr_mult': 0.024,
             'schedule': 'same'},)
  assert dataclasses.replace(method, bias_lr_mult=0.024).optim_groups() == groups
  for tree in (params, _small_params()):
    labels = param_groups.labels(tree, groups)
    for path, label in jax.tree_util.tree_flatten_with_path(labels)[0]:
      names = [p.key for p in path]
      assert label == ('default' if names[-1] == 'kernel' else 'bias_and_norm'), names
  config = tiny_config('barlow_twins')  # LARS
  config.optim.clip_norm = 1e3  # stays one global clip
  tx = param_groups.build(config.optim, 256, 100, 10, groups)[0]
  ref = optim.build(config.optim, 256, 100, 10)[0]
  config.optim.lr *= 0.024
  ref_small = optim.build(config.optim, 256, 100, 10)[0]
  params = _small_params()
  u, u1, u2 = (_run_tx(t, params, 12) for t in (tx, ref, ref_small))
  jax.tree.map(lambda l, a, b, c: np.testing.assert_allclose(
      a, b if l == 'default' else c, rtol=1e-6), labels, u, u1, u2)


def test_param_groups_without_groups_is_optim_build():
  config = tiny_config('vicreg')
  _, schedule = param_groups.build(config.optim, 256, 100, 10, ())
  _, ref_schedule = optim.build(config.optim, 256, 100, 10)
  assert float(schedule(50)) == float(ref_schedule(50))
  with pytest.raises(ValueError, match='schedule'):
    param_groups.build(config.optim, 256, 100, 10, ({'name': 'x', 'select': 'predictor',
                                                     'lr_mult': 1.0, 'schedule': 'step'},))


@pytest.mark.parametrize('name', NAMES)
def test_presets_build(name):
  """Every preset validates and builds; the tiny preset's state.create and train step trace
  (jax.eval_shape: no compile; the slow test below runs them)."""
  from jssl.train.validate import validate  # pylint: disable=g-import-not-at-top
  for preset in ('tiny', 'cifar10', 'imagenet'):
    config = get_config(name, preset)
    validate(config)
    method = methods.build(config, 1000)
    assert method.name == name
    size = 224 if preset == 'imagenet' else 32
    assert method.input_spec()['view_0'][0] == (size, size, 3)
  with pytest.raises(ValueError, match='unknown preset'):
    get_config(name, 'cifar100')
  config = get_config(name)
  method = methods.build(config, 100)
  tx, schedule = param_groups.build(config.optim, 16, 100, 1,
                                    getattr(method, 'optim_groups', tuple)())
  state = jax.eval_shape(lambda: state_lib.create(method, tx, 0))
  batch = {k: jax.ShapeDtypeStruct((16,) + s, d) for k, (s, d) in method.input_spec().items()}
  new, metrics = jax.eval_shape(step_lib.train_step_fn(method, tx, schedule), state, batch)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), new) == \
      jax.tree.map(lambda a: (a.shape, a.dtype), state)
  assert {'loss', 'grad_norm', 'finite', 'lr'} <= set(metrics)


# VICReg (covariance over the global batch) and NNCLR (a sharded batch pushed into the queue,
# global negatives) in the fast suite; SimSiam and Barlow Twins (the same shape as SimCLR / VICReg)
# only with -m slow, to keep this file's fast tests near a minute of CPU compile time.
@pytest.mark.parametrize('name', [pytest.param('simsiam', marks=pytest.mark.slow), 'vicreg',
                                  pytest.param('barlow_twins', marks=pytest.mark.slow), 'nnclr'])
def test_one_device_equals_eight_devices(name):
  """state.create, make_train_step with the method's optimizer groups: two steps of batch 16 on
  1 device and on 8 emulated devices agree (loss and metrics, params, BN stats, queue, opt)."""
  assert jax.device_count() >= 8, 'tests/conftest.py sets 8 emulated CPU devices'
  method, tx, schedule, host = _env(name)
  results = {}
  for n in (1, 8):
    mesh = sharding.make_mesh(jax.devices()[:n])
    train_step = step_lib.make_train_step(method, tx, mesh, schedule)
    state = jax.device_put(host, sharding.replicated(mesh))
    metrics = []
    with jax.default_prng_impl(PRNG):
      for step in range(2):  # the second step sees updated BN stats, momentum (and the queue)
        state, m = train_step(state, sharding.put_batch(_batch(method, seed=step), mesh))
        metrics.append(m)
    assert int(state.step) == 2
    results[n] = jax.device_get((state, metrics))
  (s1, m1), (s8, m8) = results[1], results[8]
  for a, b in zip(m1, m8):
    assert float(a['finite']) == 1.0 and np.isfinite(float(a['loss']))
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=k)
  for tree in ('params', 'batch_stats', 'method_state', 'opt_state'):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 getattr(s1, tree), getattr(s8, tree))
  delta = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()),
                       host.params, s1.params)
  assert max(jax.tree.leaves(delta)) > 1e-4
  if name == 'nnclr':
    q = s1.method_state['support']
    assert int(q['count']) == 32 and int(q['ptr']) == 32


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMES)
def test_tiny_preset_learns_without_collapse(name, tmp_path):
  """The tiny preset (jssl.train.loop, embedded CIFAR-10 subset, a few minutes on 2 cores):
  the kNN top-1 beats the random-init network's, and the normalized features keep a clearly
  non-zero per-dimension spread (no collapse)."""
  from jssl.data import pipeline  # pylint: disable=g-import-not-at-top (TensorFlow)
  from jssl.train import checkpoint, loop  # pylint: disable=g-import-not-at-top
  config = get_config(name)
  config.eval.every_epochs = 0
  config.checkpoint.use_async = False
  config.log.tensorboard = False
  devices = jax.devices()[:1]  # one device: the 8 emulated ones would share the same cores
  result = loop.train(config, str(tmp_path), devices=devices)
  info = pipeline.dataset_info(config.data.source, config.data.train_split)
  mesh = sharding.make_mesh(devices)
  # the engine's own method, optimizer and features (cached: nothing is compiled again)
  _, _, init, _, features = loop.build_engine(
      config, loop.schedule_plan(config, info['num_examples']), mesh)
  fresh = init(np.uint32(config.seed))
  baseline = loop.evaluate(config, features, fresh, mesh, num_classes=10, final=False)
  trained = checkpoint.Checkpointer(str(tmp_path / 'checkpoints'), use_async=False).restore(fresh)

  def spread(state):
    it = pipeline.eval_iterator(config.data, 256, process_index=0, process_count=1)
    f = _unit(loop.extract(features, state, it, mesh)[0])
    return float(f.std(0).mean()) * np.sqrt(f.shape[1])  # ~1 for isotropic features

  print(name, result, baseline, spread(fresh), spread(trained))
  assert result['knn_top1'] > baseline['knn_top1'] + 0.02
  assert spread(trained) > 0.1
