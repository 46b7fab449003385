"""DINO and SwAV behind the method interface: the DINO head, centre, EMA teacher, teacher
temperature, frozen last layer; SwAV's prototypes, their freeze and the queue; the weight-decay
schedule; losses on the methods' own outputs; 1 device == 8 devices; presets."""

import dataclasses
import functools
import importlib.util
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import tiny_run

from jssl import losses, methods
from jssl.methods import base, dino, ema, multicrop, swav
from jssl.models import dino_head
from jssl.train import optim, sharding
from jssl.train import state as state_lib
from jssl.train import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 16  # batch
PRESETS = {'dino': ('tiny', 'cifar10', 'imagenet', 'imagenet_resnet'),
           'swav': ('tiny', 'cifar10', 'imagenet', 'imagenet_bs256')}


def get_config(name, preset=None):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}',
                                                os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def tiny_config(name, **method):
  """The tiny preset shrunk: a 1-block ResNet of width 4, 2 global 8 px + 2 local 4 px crops,
  10 steps per epoch."""
  c = get_config(name)
  c.model.update(width=4, stage_sizes=(1,))
  c.data.augment.update(n_global=2, global_size=8, n_local=2, local_size=4)
  c.total_epochs, c.steps_per_epoch = 10, 10
  if name == 'dino':
    c.method.update(out_dim=32, hidden_dim=16, bottleneck_dim=8, freeze_last_layer_epochs=0.2,
                    warmup_teacher_temp_epochs=3, use_bn_in_head=False)  # the ViT-style head
  else:
    c.method.update(proj_hidden_dims=(16,), proj_dim=8, n_prototypes=10,
                    freeze_prototypes_epochs=0.2)
  c.method.update(**method)
  return c


def _batch(method, n=N, seed=0):
  rng = np.random.default_rng(seed)
  return {k: rng.random((n,) + tuple(s), dtype=np.float32) for k, (s, _) in
          method.input_spec().items()}


def _built(name):
  """(method, batch, (params, batch_stats, method_state)): the engine's initial state of
  `_env(name)` (one init compilation per method for the whole file)."""
  method, _, _, host = _env(name)
  return method, _batch(method), (host.params, host.batch_stats, host.method_state)


def _close(a, b, rtol=1e-5, atol=1e-6):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=rtol, atol=atol), a, b)


def _changed(a, b) -> bool:
  return any(jax.tree.leaves(jax.tree.map(lambda x, y: bool(np.any(np.asarray(x) !=
                                                                   np.asarray(y))), a, b)))


def _by_hand_features(method, params, stats, batch):
  """Backbone features of all crops, each resolution group as one batch (BN in train mode)."""
  feats = []
  for group in ([0, 1], [2, 3]):
    x = method.normalize(jnp.concatenate([batch[f'view_{i}'] for i in group]))
    h, upd = method.backbone.apply({'params': params['backbone'], 'batch_stats': stats}, x,
                                   train=True, mutable=['batch_stats'])
    stats = upd['batch_stats']
    feats.append(h)
  return jnp.concatenate(feats), stats


# ------------------------------------------------------------------------------------- DINO


def test_dino_head_weight_norm_and_unit_columns():
  head = dino_head.DINOHead(out_dim=12, hidden_dim=16, bottleneck_dim=8)
  x = jax.random.normal(jax.random.PRNGKey(0), (5, 6))
  variables = head.init(jax.random.PRNGKey(1), x)
  p = variables['params']
  assert set(p) == {'dense1', 'dense2', 'dense3', 'last_layer'}
  assert set(p['last_layer']) == {'kernel'}  # norm_last_layer: the gain is fixed to 1
  w = dino_head.weight_norm(p['last_layer']['kernel'])
  np.testing.assert_allclose(np.linalg.norm(w, axis=0), 1.0, rtol=1e-6)
  # by hand: MLP (GELU), L2 normalize, then the column-normalized kernel
  h = x
  for i in (1, 2):
    h = jax.nn.gelu(h @ p[f'dense{i}']['kernel'] + p[f'dense{i}']['bias'], approximate=False)
  b = h @ p['dense3']['kernel'] + p['dense3']['bias']
  b = b / np.linalg.norm(b, axis=-1, keepdims=True)
  v = np.asarray(p['last_layer']['kernel'])
  _close(head.apply(variables, x), b @ (v / np.linalg.norm(v, axis=0)), rtol=1e-5, atol=1e-6)
  # the output is invariant to the scale of each column of v
  scaled = jax.tree.map(lambda a: a, p)
  scaled['last_layer'] = {'kernel': v * np.arange(1, 13, dtype=np.float32)}
  _close(head.apply({'params': scaled}, x), head.apply(variables, x), rtol=1e-5, atol=1e-6)
  # norm_last_layer=False: a learnable gain g (ones) and BN when use_bn
  free = dino_head.DINOHead(out_dim=12, hidden_dim=16, bottleneck_dim=8, norm_last_layer=False,
                            use_bn=True)
  fv = free.init(jax.random.PRNGKey(1), x)
  np.testing.assert_array_equal(fv['params']['last_layer']['scale'], np.ones(12))
  assert set(fv['batch_stats']) == {'bn1', 'bn2'}


def test_dino_build_state_and_input_spec():
  method, batch, (params, stats, state) = _built('dino')
  assert isinstance(method, dino.DINO) and isinstance(method, base.Method)
  assert method.input_spec() == {'view_0': ((8, 8, 3), jnp.float32),
                                 'view_1': ((8, 8, 3), jnp.float32),
                                 'view_2': ((4, 4, 3), jnp.float32),
                                 'view_3': ((4, 4, 3), jnp.float32)}
  assert set(params) == {'backbone', 'head'}
  assert set(state) == {'teacher_params', 'teacher_batch_stats', 'center'}
  jax.tree.map(np.testing.assert_array_equal, state['teacher_params'], params)
  np.testing.assert_array_equal(state['center'], np.zeros(32))
  assert method.freeze_last_layer_steps == 2 and method.steps_per_epoch == 10
  assert jax.jit(method.features)(params, stats, batch["view_0"]).shape == (N, 4)


def test_dino_loss_and_centre_update_exact():
  method, batch, (params, stats, state) = _built('dino')
  center = jnp.asarray(np.random.default_rng(1).normal(size=32), jnp.float32)
  state = dict(state, center=center)
  step = 15  # epoch 1 of a 3-epoch warm-up: teacher temperature 0.055

  def both(params, state):
    loss, (new_stats, new_state, metrics) = method.loss_fn(params, stats, state, batch,
                                                           jax.random.PRNGKey(0), step)
    h, _ = _by_hand_features(method, params, stats['backbone'], batch)
    s = method.head.apply({'params': params['head']}, h).reshape(4, N, 32)
    x = method.normalize(jnp.concatenate([batch['view_0'], batch['view_1']]))
    ht = method.backbone.apply({'params': state['teacher_params']['backbone'],
                                'batch_stats': state['teacher_batch_stats']['backbone']}, x,
                               train=True, mutable=['batch_stats'])[0]
    t = method.head.apply({'params': state['teacher_params']['head']}, ht).reshape(2, N, 32)
    want = losses.dino_loss(s, t, state['center'], student_temp=0.1, teacher_temp=0.055)
    return loss, want, t, new_state, metrics

  loss, want, t, new_state, metrics = jax.jit(both)(params, state)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(metrics['teacher_temp'], 0.055, rtol=1e-6)
  t = np.asarray(t, np.float64)
  want_center = 0.9 * np.asarray(center, np.float64) + 0.1 * t.reshape(-1, 32).mean(0)
  np.testing.assert_allclose(new_state['center'], want_center, rtol=1e-5, atol=1e-6)
  # the teacher's own BN running statistics moved; its params did not
  assert _changed(new_state['teacher_batch_stats'], state['teacher_batch_stats'])
  jax.tree.map(np.testing.assert_array_equal, new_state['teacher_params'],
               state['teacher_params'])


def test_dino_teacher_temperature_schedule():
  method = methods.build(tiny_config('dino', warmup_teacher_temp_epochs=4), 100)
  assert method.steps_per_epoch == 10
  lin = np.linspace(0.04, 0.07, 4)  # DINO: one value per epoch, then constant
  for step in (0, 5, 9, 10, 19, 20, 30, 39, 40, 55, 99, 1000):
    want = lin[step // 10] if step // 10 < 4 else 0.07
    np.testing.assert_allclose(method.teacher_temperature(step), want, rtol=1e-6, err_msg=step)
  flat = methods.build(tiny_config('dino', warmup_teacher_temp_epochs=0), 100)
  np.testing.assert_allclose(flat.teacher_temperature(0), 0.07, rtol=1e-7)
  one = methods.build(tiny_config('dino', warmup_teacher_temp_epochs=1), 100)
  np.testing.assert_allclose([one.teacher_temperature(9), one.teacher_temperature(10)],
                             [0.04, 0.07], rtol=1e-6)


def test_dino_teacher_is_a_cosine_ema_of_the_student():
  method, _, (params, _, state) = _built('dino')
  student = jax.tree.map(lambda p: p + 0.5, params)
  for step in (2, 37, 99):  # after the frozen steps; K = total_steps = 100
    new_params, new_state = method.update_state(params, student, state, step)
    tau = 1 - (1 - 0.99) * (math.cos(math.pi * step / 100) + 1) / 2
    want = jax.tree.map(lambda t, s: tau * np.asarray(t, np.float64) + (1 - tau) * np.asarray(s),
                        state['teacher_params'], student)
    _close(new_state['teacher_params'], want, rtol=1e-6, atol=1e-7)
    jax.tree.map(np.testing.assert_array_equal, new_params, student)
    np.testing.assert_array_equal(new_state['center'], state['center'])


def test_dino_last_layer_frozen_then_trained():
  """freeze_last_layer_steps = 2: steps 0 and 1 keep the last layer (no gradient reaches it),
  step 2 changes it; the rest of the head trains from step 0; the teacher EMAs the kept value."""
  method, batch, (params, stats, state) = _built('dino')
  grads = jax.jit(jax.grad(lambda p, s: method.loss_fn(p, stats, state, batch, None, s)[0]))
  g0, g2 = grads(params, 0), grads(params, 2)
  assert not _changed(g0['head']['last_layer'], jax.tree.map(jnp.zeros_like,
                                                             g0['head']['last_layer']))
  assert _changed(g2['head']['last_layer'], jax.tree.map(jnp.zeros_like,
                                                         g2['head']['last_layer']))
  _close(g0['head']['dense1'], g2['head']['dense1'], rtol=1e-5, atol=1e-7)  # same loss otherwise

  method_, tx, mesh, train_step, host = _engine('dino', 1)
  st = jax.device_put(host, sharding.replicated(mesh))
  last = [host.params['head']['last_layer']]
  for step in range(3):
    before = jax.device_get(st)
    st, m = train_step(st, sharding.put_batch(_batch(method_, seed=step), mesh))
    after = jax.device_get(st)
    assert float(m['finite']) == 1.0
    last.append(after.params['head']['last_layer'])
    assert _changed(before.params['head']['dense1'], after.params['head']['dense1'])
    tau = float(ema.cosine_momentum(step, 100, 0.99))
    want = jax.tree.map(lambda t, s: tau * t + (1 - tau) * s, before.method_state['teacher_params'],
                        after.params)
    _close(after.method_state['teacher_params'], want, rtol=1e-5, atol=1e-7)
  jax.tree.map(np.testing.assert_array_equal, last[0], last[1])
  jax.tree.map(np.testing.assert_array_equal, last[0], last[2])
  assert _changed(last[2], last[3])


# ------------------------------------------------------------------------------------- SwAV


def test_swav_build_state_and_unit_prototypes():
  method, batch, (params, stats, state) = _built('swav')
  assert isinstance(method, swav.SwAV) and method.freeze_prototypes_steps == 2
  assert set(params) == {'backbone', 'projector', 'prototypes'} and state == {}
  kernel = np.asarray(params['prototypes']['kernel'])
  assert kernel.shape == (8, 10)
  np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, rtol=1e-6)
  # update_state after the freeze re-normalizes every prototype (kernel column)
  moved = jax.tree.map(lambda p: p * 3.0 + 0.1, params)
  new, _ = method.update_state(params, moved, state, 2)
  k = np.asarray(moved['prototypes']['kernel'], np.float64)
  _close(new['prototypes']['kernel'], k / np.linalg.norm(k, axis=0), rtol=1e-6, atol=1e-7)
  jax.tree.map(np.testing.assert_array_equal, new['backbone'], moved['backbone'])
  # during the freeze the old prototypes stay
  new, _ = method.update_state(params, moved, state, 1)
  np.testing.assert_array_equal(new['prototypes']['kernel'], params['prototypes']['kernel'])
  assert jax.jit(method.features)(params, stats, batch["view_0"]).shape == (N, 4)


def test_swav_loss_is_swav_loss_of_its_scores():
  method, batch, (params, stats, state) = _built('swav')

  def both(params):
    loss, (new_stats, _, _) = method.loss_fn(params, stats, state, batch, None, 5)
    h, _ = _by_hand_features(method, params, stats['backbone'], batch)
    z = method.projector.apply({'params': params['projector'],
                                'batch_stats': stats['projector']}, h, train=True,
                               mutable=['batch_stats'])[0]
    z = z / jnp.linalg.norm(z, axis=-1, keepdims=True)
    scores = (z @ params['prototypes']['kernel']).reshape(4, N, 10)
    want = losses.swav_loss(scores, temperature=0.1, epsilon=0.05, n_iters=3,
                            assign_crops=(0, 1))
    codes = [losses.sinkhorn(scores[a], epsilon=0.05, n_iters=3) for a in (0, 1)]
    return loss, want, swav.swapped_prediction(scores, codes, (0, 1), 0.1), new_stats

  loss, want, swapped, new_stats = jax.jit(both)(params)
  np.testing.assert_allclose(loss, want, rtol=1e-5)
  np.testing.assert_allclose(swapped, want, rtol=1e-5)
  assert _changed(new_stats, stats)


def test_swav_prototypes_frozen_then_trained():
  method, batch, (params, stats, state) = _built('swav')
  grads = jax.jit(jax.grad(lambda p, s: method.loss_fn(p, stats, state, batch, None, s)[0]))
  assert not np.any(np.asarray(grads(params, 1)['prototypes']['kernel']))
  assert np.any(np.asarray(grads(params, 2)['prototypes']['kernel']))
  method_, tx, mesh, train_step, host = _engine('swav', 1, queue=True)
  st = jax.device_put(host, sharding.replicated(mesh))
  kernels = [host.params['prototypes']['kernel']]
  for step in range(3):
    before = jax.device_get(st)
    st, m = train_step(st, sharding.put_batch(_batch(method_, seed=step), mesh))
    after = jax.device_get(st)
    assert float(m['finite']) == 1.0
    assert _changed(before.params['projector'], after.params['projector'])
    kernels.append(after.params['prototypes']['kernel'])
    np.testing.assert_allclose(np.linalg.norm(kernels[-1], axis=0), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(kernels[0], kernels[1])
  np.testing.assert_array_equal(kernels[0], kernels[2])
  assert np.abs(kernels[3] - kernels[2]).max() > 1e-6


def test_epochs_are_the_engines_epochs_not_total_steps_over_total_epochs():
  """A run cut short by total_steps keeps the data's epoch: 200 steps of a 4-epoch config with
  390 steps per epoch freezes the prototypes / DINO's last layer for 390 * fraction steps."""
  for name, key, attr in (('swav', 'freeze_prototypes_epochs', 'freeze_prototypes_steps'),
                          ('dino', 'freeze_last_layer_epochs', 'freeze_last_layer_steps')):
    c = tiny_config(name, **{key: 0.5})
    c.total_epochs, c.steps_per_epoch = 4, 0
    assert getattr(methods.build(c, 200, steps_per_epoch=390), attr) == 195
    assert getattr(methods.build(c, 200), attr) == 25  # no plan given: 200 / 4 steps per epoch
    c.steps_per_epoch = 10  # the config's own value wins over the plan's
    assert getattr(methods.build(c, 200, steps_per_epoch=390), attr) == 5
    assert c.steps_per_epoch == 10  # build does not modify the caller's config


def test_running_averages_follow_the_global_crops_unless_all_crops_asked():
  """Batch statistics of both groups normalize training alike; the BN running averages are the
  global group's update alone by default, and global-then-local with running_stats_all_crops."""
  method, batch, (params, stats, _) = _built('swav')
  groups = method.crops.groups(batch)
  bb = stats['backbone']

  def update(stats, views):
    x = method.normalize(jnp.concatenate(views))
    return method.backbone.apply({'params': params['backbone'], 'batch_stats': stats}, x,
                                 train=True, mutable=['batch_stats'])

  (h_global, after_global), (h_local, _) = update(bb, groups[0]), update(bb, groups[1])
  h_chain, after_both = update(after_global['batch_stats'], groups[1])
  np.testing.assert_allclose(h_chain, h_local, rtol=1e-5, atol=1e-6)  # train mode: batch stats
  want_features = jnp.concatenate([h_global, h_local])
  for chain, want_stats in ((False, after_global['batch_stats']),
                            (True, after_both['batch_stats'])):
    m = dataclasses.replace(method, running_stats_all_crops=chain)
    h, new = multicrop.backbone_groups(m, m.backbone, params['backbone'], bb, groups)
    _close(h, want_features)
    _close(new, want_stats)
  assert _changed(after_global['batch_stats'], after_both['batch_stats'])


def test_swav_refuses_fewer_prototypes_than_dimensions():
  """K < D leaves a null space: z orthogonal to every prototype scores 0 everywhere, Sinkhorn
  of equal scores is uniform, so loss = log K with zero gradient: a collapse (the old tiny
  preset's 100 prototypes for 128 dimensions fell into it). The builder names both keys."""
  with pytest.raises(ValueError, match=r'n_prototypes \(6\) < config.method.proj_dim \(8\)'):
    methods.build(tiny_config('swav', n_prototypes=6), 100)
  k, d, n = 6, 8, 5
  protos = np.linalg.qr(np.random.default_rng(0).normal(size=(d, d)))[0][:, :k]  # [D, K]
  z = np.linalg.qr(np.random.default_rng(0).normal(size=(d, d)))[0][:, k:k + 1].T  # null space
  scores = jnp.asarray(np.repeat(z @ protos, n, axis=0)[None].repeat(2, axis=0), jnp.float32)
  np.testing.assert_allclose(scores, 0.0, atol=1e-6)
  loss, grad = jax.value_and_grad(lambda s: losses.swav_loss(
      s, temperature=0.1, epsilon=0.05, n_iters=3, assign_crops=(0, 1)))(scores)
  np.testing.assert_allclose(loss, math.log(k), rtol=1e-5)
  np.testing.assert_allclose(grad, 0.0, atol=1e-6)


def test_swav_queue_starts_fills_and_is_used():
  """queue of 32 rows from step 1: step 0 pushes nothing; steps 1 and 2 fill it (FIFO, pointer
  wraps to 0); steps 0-2 use only the batch; step 3 runs Sinkhorn over queue + batch rows and
  keeps the batch rows; step 3's push overwrites the oldest rows (step 1's)."""
  c = tiny_config('swav', queue_length=32, queue_start_epoch=0.1, freeze_prototypes_epochs=0.0)
  method = methods.build(c, 100)
  assert method.queue_start_step == 1 and method.queue_length == 32
  batches = [_batch(method, seed=s) for s in range(4)]
  host = _env('swav', True)[3]  # the same networks: reuse an initial state, fresh 32-row queues
  params, stats = host.params, host.batch_stats
  state = {'queues': [ema.queue_init(32, 8) for _ in range(2)]}
  assert jax.tree.structure(state) == jax.tree.structure(
      jax.eval_shape(method.init, jax.random.PRNGKey(0), batches[0])[2])
  loss_fn = jax.jit(method.loss_fn)
  embed = jax.jit(lambda b: method.embed(params, stats, method.crops.groups(b), None)[0])
  kernel = params['prototypes']['kernel']
  for step, batch in enumerate(batches):
    loss, (_, new, metrics) = loss_fn(params, stats, state, batch, None, step)
    z = embed(batch)
    scores = jnp.einsum('vnd,dk->vnk', z, kernel)
    counts = [int(q['count']) for q in state['queues']]
    if step < 3:
      assert float(metrics['queue_used']) == 0.0
      want = losses.swav_loss(scores, temperature=0.1, epsilon=0.05, n_iters=3)
    else:
      assert counts == [32, 32] and float(metrics['queue_used']) == 1.0
      codes = [losses.sinkhorn(jnp.concatenate([q['items'] @ kernel, scores[a]]), epsilon=0.05,
                               n_iters=3)[32:] for a, q in zip((0, 1), state['queues'])]
      want = swav.swapped_prediction(scores, codes, (0, 1), 0.1)
      assert abs(float(want) - float(losses.swav_loss(scores))) > 1e-4  # the queue mattered
    np.testing.assert_allclose(loss, want, rtol=1e-5, err_msg=str(step))
    for a, q_old, q_new in zip((0, 1), state['queues'], new['queues']):
      if step == 0:
        jax.tree.map(np.testing.assert_array_equal, q_new, q_old)
      else:
        slot = ((step - 1) % 2) * N
        np.testing.assert_allclose(q_new['items'][slot:slot + N], z[a], rtol=1e-6, atol=1e-7)
        assert int(q_new['ptr']) == (slot + N) % 32
        assert int(q_new['count']) == min(int(q_old['count']) + N, 32)
    if step == 2:  # FIFO: step 1's rows first, then step 2's
      np.testing.assert_allclose(ema.queue_ordered(new['queues'][0])[:N], z1_prev, rtol=1e-6)
    z1_prev = z[0]
    state = new


# ------------------------------------------------------------------------- engine, presets


@functools.lru_cache(maxsize=None)
def _env(name, queue=False):
  kw = dict(queue_length=16, queue_start_epoch=0.0) if queue else {}
  config = tiny_config(name, **kw)
  method = methods.build(config, 100)
  tx, schedule = optim.build(config.optim, N, 100, 0)  # no warm-up: step 0 moves params
  mesh = sharding.make_mesh(jax.devices()[:1])
  return method, tx, schedule, jax.device_get(
      state_lib.create(method, tx, 0, sharding.replicated(mesh)))


def _engine(name, n_devices, queue=False):
  method, tx, schedule, host = _env(name, queue)
  mesh = sharding.make_mesh(jax.devices()[:n_devices])
  return method, tx, mesh, _step(name, n_devices, queue), host


@functools.lru_cache(maxsize=None)
def _step(name, n_devices, queue=False):
  method, tx, schedule, _ = _env(name, queue)
  mesh = sharding.make_mesh(jax.devices()[:n_devices])
  return step_lib.make_train_step(method, tx, mesh, schedule)


@pytest.mark.parametrize('name,queue', [('dino', False), ('swav', True)])
def test_one_device_equals_eight_devices(name, queue):
  """2 global + 2 local crops, batch 16; SwAV with a 16-row queue from step 0, so the second
  step's Sinkhorn runs over queue + global batch."""
  assert jax.device_count() >= 8, 'tests/conftest.py sets 8 emulated CPU devices'
  results = {}
  for n in (1, 8):
    method, _, mesh, train_step, host = _engine(name, n, queue)
    state = jax.device_put(host, sharding.replicated(mesh))
    metrics = []
    for step in range(2):
      state, m = train_step(state, sharding.put_batch(_batch(method, seed=step), mesh))
      metrics.append(m)
    results[n] = jax.device_get((state, metrics))
  (s1, m1), (s8, m8) = results[1], results[8]
  for a, b in zip(m1, m8):
    assert float(a['finite']) == 1.0
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-6, err_msg=k)
  for tree in ('params', 'batch_stats', 'method_state', 'opt_state'):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 getattr(s1, tree), getattr(s8, tree))
  assert _changed(results[1][0].params, _env(name, queue)[3].params)
  if queue:
    assert float(m1[1]['queue_used']) == 1.0
    assert int(s1.method_state['queues'][0]['count']) == 16


@pytest.mark.parametrize('name', ['dino', 'swav'])
def test_presets_build(name):
  from jssl.data import augment_recipes  # pylint: disable=g-import-not-at-top
  for preset in PRESETS[name]:
    config = get_config(name, preset)
    assert config.data.recipe == 'multicrop'
    augment_recipes.resolve('multicrop', config.data.augment.to_dict())
    method = methods.build(config, 1000)
    assert method.name == name
    spec = method.input_spec()
    big = 224 if preset.startswith('imagenet') else 32
    assert len(spec) == config.data.augment.n_global + config.data.augment.n_local
    assert spec['view_0'][0] == spec['view_1'][0] == (big, big, 3)
    if config.data.augment.n_local:
      small = config.data.augment.local_size
      assert spec[f'view_{len(spec) - 1}'][0] == (small, small, 3)
  with pytest.raises(ValueError, match='unknown preset'):
    get_config(name, 'cifar100')
  vit = methods.build(get_config('dino', 'imagenet'), 1000)
  assert type(vit.backbone).__name__ == 'ViT' and vit.head.out_dim == 65536
  assert len(vit.input_spec()) == 12


@pytest.mark.slow  # ~40 s of XLA:CPU compile each; benchmarks/cifar_budget.py runs these presets
@pytest.mark.parametrize('name', ['dino', 'swav'])
def test_tiny_preset_trains_one_step(name):
  config = get_config(name)
  method = methods.build(config, 10)
  assert method.crops == multicrop.Crops(2, 32, 2, 16)
  tx, schedule = optim.build(config.optim, N, 10, 1)
  mesh = sharding.make_mesh(jax.devices()[:1])
  state = state_lib.create(method, tx, 0, sharding.replicated(mesh))
  train_step = step_lib.make_train_step(method, tx, mesh, schedule)
  state, metrics = train_step(state, sharding.put_batch(_batch(method), mesh))
  assert float(metrics['finite']) == 1.0 and np.isfinite(float(metrics['loss']))
  assert int(state.step) == 1


@pytest.mark.slow
@pytest.mark.parametrize('name', ['dino', 'swav'])
def test_tiny_run_learns_without_collapse(name, tmp_path):
  """The tiny preset for 2 epochs on the embedded CIFAR-10 subset (minutes on 2 CPU cores): the
  trained features do not collapse (per-dimension std of the normalized features well above 0)
  and their kNN top-1 beats the randomly initialized network's."""
  tiny_run.assert_learns_without_collapse(get_config(name), tmp_path)
