"""I-JEPA: the predictor's attention structure, the loss against a float64 recomputation, the EMA
target, the training step, the features and the presets."""

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import methods
from jssl.data import feeding
from jssl.data import masks
from jssl.methods import ijepa
from jssl.models.ijepa_predictor import IJEPAPredictor
from jssl.train import param_groups, sharding, validate
from jssl.train import state as state_lib
from jssl.train import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRID = (8, 8)


def get_config(preset=None):
  spec = importlib.util.spec_from_file_location('cfg_ijepa', os.path.join(ROOT, 'configs',
                                                                          'ijepa.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def images(n, seed=0):
  return np.random.default_rng(seed).random((n, 32, 32, 3), dtype=np.float32)


@functools.lru_cache(maxsize=None)
def built():
  """(method, params, method_state) of the tiny preset, initialised once."""
  method = methods.build(get_config('tiny'), 100)
  params, batch_stats, method_state = jax.jit(method.init)(jax.random.PRNGKey(0),
                                                           {'view_0': images(2)})
  assert batch_stats == {}
  return method, params, method_state


# ---------------------------------------------------------------------------------- predictor

@functools.lru_cache(maxsize=None)
def predictor_setup():
  pred = IJEPAPredictor(width=16, depth=2, num_heads=2, out_width=8)
  context, targets = masks.ijepa_masks(jax.random.key(1), 3, GRID)
  tokens = jax.random.normal(jax.random.key(2), (3, 64, 8))
  params = pred.init(jax.random.key(3), tokens, context, targets, GRID)['params']
  # Non-zero LayerNorm biases and mask token spread, so no path is trivially constant.
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(p.size), p.shape),
                        params)
  fn = jax.jit(lambda t, c, g: pred.apply({'params': params}, t, c, g, GRID))
  return fn, np.asarray(tokens), np.asarray(context), np.asarray(targets)


def bump(a, index, value):
  """A copy of NumPy `a` with `value` added at `index` (no per-index jit compilation)."""
  a = a.copy()
  a[index] += value
  return a


def test_prediction_reads_only_the_context_and_its_own_block():
  fn, tokens, context, targets = predictor_setup()
  base = np.asarray(fn(tokens, context, targets))
  assert base.shape == (3, 4, 64, 8) and np.isfinite(base).all()
  for i in range(3):
    for j in range(4):
      seen = context[i] | targets[i, j]
      outside = np.flatnonzero(~seen)
      inside = np.flatnonzero(context[i])
      # Perturb the encoding of a patch outside context | block j (a patch of another block, or
      # one in no mask): block j's predictions do not move at all.
      p = outside[0]
      moved = np.asarray(fn(bump(tokens, (i, p), 5.0), context, targets))
      np.testing.assert_array_equal(moved[i, j][targets[i, j]], base[i, j][targets[i, j]])
      # A context patch's encoding does move them.
      moved = np.asarray(fn(bump(tokens, (i, inside[0]), 5.0), context, targets))
      assert np.abs(moved[i, j][targets[i, j]] - base[i, j][targets[i, j]]).max() > 1e-3
  # Another image's tokens never matter.
  moved = np.asarray(fn(bump(tokens, 1, 3.0), context, targets))
  np.testing.assert_array_equal(moved[0], base[0])
  np.testing.assert_array_equal(moved[2], base[2])


def test_target_blocks_are_independent():
  fn, tokens, context, targets = predictor_setup()
  base = np.asarray(fn(tokens, context, targets))
  # Move block 2 of image 0 elsewhere (still outside the context): every other block's whole
  # output is unchanged, block 2's changes.
  other = np.zeros_like(targets[0, 2])
  free = np.flatnonzero(~context[0] & ~targets[0, 2])
  other[free[:3]] = True
  changed = targets.copy()
  changed[0, 2] = other
  moved = np.asarray(fn(tokens, context, changed))
  for j in (0, 1, 3):
    np.testing.assert_allclose(moved[0, j], base[0, j], rtol=0, atol=1e-6)
  assert np.abs(moved[0, 2] - base[0, 2]).max() > 1e-3
  np.testing.assert_allclose(moved[1:], base[1:], rtol=0, atol=1e-6)
  # Each block's predictions equal those of the predictor run with that block alone.
  for j in range(4):
    alone = np.asarray(fn(tokens, context, targets[:, j:j + 1]))[:, 0]
    np.testing.assert_allclose(alone, base[:, j], rtol=1e-5, atol=1e-5)


def test_predictor_checks_shapes():
  fn, tokens, context, targets = predictor_setup()
  pred = IJEPAPredictor(width=16, depth=1, num_heads=2, out_width=8)
  with pytest.raises(ValueError, match='targets must be'):
    pred.init(jax.random.key(0), tokens, context, targets[0], GRID)
  with pytest.raises(ValueError, match='grid'):
    pred.init(jax.random.key(0), tokens, context, targets, (4, 4))


# ------------------------------------------------------------------------- the method's parts

@pytest.mark.slow  # kept out of the default suite for its time
def test_end_to_end_predictions_ignore_pixels_outside_context_and_block():
  method, params, _ = built()
  x = np.asarray(method.normalize(images(2)))
  context, targets = method.draw_masks(jax.random.key(4), 2)
  fn = jax.jit(lambda x: method.predict(params, x, context, targets, train=False))
  base = np.asarray(fn(x))
  context, targets = np.asarray(context), np.asarray(targets)
  p = np.flatnonzero(~(context[0] | targets[0, 1]))[0]
  r, c = divmod(int(p), 8)
  moved = np.asarray(fn(bump(x, np.s_[0, 4 * r:4 * r + 4, 4 * c:4 * c + 4], 1.0)))
  np.testing.assert_allclose(moved[0, 1][targets[0, 1]], base[0, 1][targets[0, 1]], atol=1e-6)
  q = np.flatnonzero(context[0])[0]
  r, c = divmod(int(q), 8)
  moved = np.asarray(fn(bump(x, np.s_[0, 4 * r:4 * r + 4, 4 * c:4 * c + 4], 1.0)))
  assert np.abs(moved[0, 1][targets[0, 1]] - base[0, 1][targets[0, 1]]).max() > 1e-4


def reference_loss(predictions, target_tokens, targets):
  """float64 NumPy: mean over blocks of the masked mean of mean_D (pred - layernorm(target))^2."""
  p, t, m = (np.asarray(a, np.float64) for a in (predictions, target_tokens, targets))
  t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-6)
  per = ((p - t[:, None]) ** 2).mean(-1)  # [N, T, L]
  return np.mean([(per[:, j] * m[:, j]).sum() / m[:, j].sum() for j in range(m.shape[1])])


def test_loss_equals_a_float64_recomputation():
  method, params, method_state = built()
  batch = {'view_0': images(4, seed=1)}
  rng = jax.random.key(7)
  loss, (_, new_state, metrics) = jax.jit(method.loss_fn)(params, {}, method_state, batch, rng, 5)
  # The same masks as loss_fn (its rng split), the module outputs, the loss in NumPy.
  mask_rng, drop_rng = jax.random.split(rng)
  x = method.normalize(batch['view_0'])
  context, targets = method.draw_masks(mask_rng, 4)
  target_tokens = jax.jit(method.target_tokens)(method_state['target_params'], x)
  predictions = jax.jit(method.predict)(params, x, context, targets, drop_rng)
  want = reference_loss(predictions, target_tokens, targets)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  assert float(metrics['loss']) == float(loss)
  np.testing.assert_allclose(float(metrics['tau']), 0.99 + 0.01 * 5 / 100, rtol=1e-6)
  np.testing.assert_allclose(float(metrics['context_fraction']), np.asarray(context).mean())
  assert 0 < float(metrics['target_std']) < 1
  assert new_state is method_state or jax.tree.all(jax.tree.map(
      lambda a, b: bool(jnp.all(a == b)), new_state, method_state))
  # The target tokens are the target encoder on every patch of the whole image, with no mask:
  # target weights equal to the encoder's give the encoder's own unmasked tokens.
  full = jax.jit(method.encoder.apply, static_argnums=2)({'params': params['encoder']}, x,
                                                         False)['patch_tokens']
  np.testing.assert_allclose(np.asarray(jax.jit(method.target_tokens)(params['encoder'], x)),
                             np.asarray(full), atol=1e-6)


def test_no_gradient_reaches_the_target_and_the_online_parts_get_one():
  method, params, method_state = built()
  batch = {'view_0': images(4, seed=2)}
  f = lambda p, s: method.loss_fn(p, {}, s, batch, jax.random.key(3), 0)[0]
  g_params, g_state = jax.jit(jax.grad(f, argnums=(0, 1)))(params, method_state)
  assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(g_state))
  for part in ('encoder', 'predictor'):
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(g_params[part])) > 0
  assert 'cls' not in params['encoder']  # no CLS token


@pytest.mark.parametrize('step', [0, 50, 100, 150])
def test_target_is_the_ema_at_the_linear_momentum(step):
  method, params, method_state = built()
  new_params = jax.tree.map(lambda p: p + 0.5, params)
  out_params, new_state = jax.jit(method.update_state)(params, new_params, method_state, step)
  jax.tree.map(np.testing.assert_array_equal, out_params, new_params)
  tau = 0.99 + 0.01 * min(step, 100) / 100
  np.testing.assert_allclose(float(ijepa.linear_momentum(step, 100, 0.99)), tau, rtol=1e-7)
  want = jax.tree.map(lambda t, o: tau * np.asarray(t, np.float64) + (1 - tau) * np.asarray(o),
                      method_state['target_params'], new_params['encoder'])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(np.asarray(a), b, rtol=1e-6, atol=1e-7),
               new_state['target_params'], want)
  if step >= 100:  # momentum 1: the target stays put
    jax.tree.map(np.testing.assert_array_equal, new_state['target_params'],
                 method_state['target_params'])


@pytest.mark.slow  # ~45 s on 2 loaded cores, mostly compilation; test_every_method runs
# the same 3 steps on 8 devices in the default suite
def test_three_jitted_steps_of_the_tiny_preset():
  config = get_config('tiny')
  config.batch_size = 16
  method = methods.build(config, 50, 10)
  mesh = sharding.make_mesh(jax.devices()[:1])
  tx, schedule = param_groups.build(config.optim, 16, 50, 2, ())
  state = state_lib.create(method, tx, 0, sharding.replicated(mesh))
  target0 = jax.device_get(state.method_state['target_params'])
  train_step = step_lib.make_train_step(method, tx, mesh, schedule)
  losses = []
  for k in range(3):
    state, metrics = train_step(state, feeding.global_batch({'view_0': images(16, k)}, mesh))
    losses.append(float(metrics['loss']))
    assert float(metrics['finite']) == 1.0
  assert np.isfinite(losses).all() and len(set(losses)) == 3, losses
  moved = jax.tree.leaves(jax.tree.map(lambda a, b: np.abs(np.asarray(a) - b).max(),
                                       state.method_state['target_params'], target0))
  assert max(moved) > 0  # the EMA target follows the encoder


def test_features_are_the_mean_pooled_context_encoder():
  method, params, _ = built()
  x = images(3, seed=5)
  feats = np.asarray(jax.jit(method.features)(params, {}, x))
  assert feats.shape == (3, 64)
  tokens = jax.jit(method.encoder.apply, static_argnums=2)(
      {'params': params['encoder']}, method.normalize(x), False)['patch_tokens']
  assert tokens.shape == (3, 64, 64)
  np.testing.assert_allclose(feats, np.asarray(tokens).mean(1), atol=1e-6)


# --------------------------------------------------------------------------------- the presets

def test_presets():
  t = get_config('tiny')
  assert (t.model.width, t.model.depth, t.model.patch_size, t.model.pool) == (64, 2, 4, 'mean')
  assert (t.method.predictor_width, t.method.predictor_depth) == (32, 1)
  assert (t.data.source, t.data.recipe, t.data.augment.image_size) == ('embedded', 'mae', 32)
  for preset in ('tiny', 'cifar10_cpu', 'cifar10', 'imagenet', 'imagenet_vith14'):
    c = get_config(preset)
    assert c.data.augment.flip_p == 0.0 and tuple(c.data.augment.scale) == (0.3, 1.0)
    assert (c.method.num_targets, tuple(c.method.target_scale), tuple(c.method.context_scale)) \
        == (4, (0.15, 0.2), (0.85, 1.0))
    assert (c.optim.name, c.optim.weight_decay, c.optim.weight_decay_end) == ('adamw', 0.04, 0.4)
    validate.validate(c)
    method = methods.build(c, 1000, 100)
    assert method.encoder.class_token is False and method.tau_end == 1.0
  c30 = get_config('cifar10_cpu')
  assert (c30.total_steps, c30.batch_size, c30.data.source) == (500, 256, 'tfds:cifar10')
  i = get_config('imagenet')
  assert (i.model.name, i.model.patch_size, i.data.augment.image_size) == ('vit_base', 16, 224)
  assert (i.batch_size, i.total_epochs, i.optim.warmup_epochs) == (2048, 300, 40.0)
  assert i.optim.lr * i.batch_size / 256 == pytest.approx(1e-3)
  assert (i.method.predictor_width, i.method.predictor_depth, i.method.tau_base) == (384, 6, 0.996)
  h = get_config('imagenet_vith14')
  assert (h.model.width, h.model.depth, h.model.patch_size, h.method.predictor_depth) == (
      1280, 32, 14, 12)


def test_config_errors_name_the_keys():
  c = get_config('tiny')
  c.model.pool = 'cls'
  with pytest.raises(ValueError, match='config.model.pool'):
    methods.build(c, 10)
  c = get_config('tiny')
  c.model.class_token = True
  with pytest.raises(ValueError, match='config.model.class_token'):
    methods.build(c, 10)
  c = get_config('tiny')
  c.model.patch_size = 8  # a 4x4 grid cannot hold 4 blocks and 10 context patches
  with pytest.raises(ValueError, match='config.model.patch_size'):
    methods.build(c, 10)
