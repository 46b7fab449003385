"""I-JEPA: the predictor's attention structure, the loss against a float64 recomputation, the EMA
target, the training step, the features and the presets."""

import dataclasses
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
def predictor_setup(context_tokens=48):
  """(jitted predictor on gathered inputs, context tokens [3, K, 8], context / targets masks,
  the four index arrays) on the 8x8 grid, K = context_tokens."""
  pred = IJEPAPredictor(width=16, depth=2, num_heads=2, out_width=8)
  context, targets = masks.ijepa_masks(jax.random.key(1), 3, GRID)
  m = masks.ijepa_max_block_area(GRID, (0.15, 0.2), (0.75, 1.5))
  indices = masks.ijepa_indices(jax.random.key(5), context, targets, context_tokens, m)
  tokens = jax.random.normal(jax.random.key(2), (3, context_tokens, 8))
  params = pred.init(jax.random.key(3), tokens, *indices, GRID)['params']
  # Non-zero LayerNorm biases and mask token spread, so no path is trivially constant.
  params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(jax.random.key(p.size), p.shape),
                        params)
  fn = jax.jit(lambda t, *ix: pred.apply({'params': params}, t, *ix, GRID))
  return (fn, np.asarray(tokens), np.asarray(context), np.asarray(targets),
          tuple(np.asarray(a) for a in indices))


def bump(a, index, value):
  """A copy of NumPy `a` with `value` added at `index` (no per-index jit compilation)."""
  a = a.copy()
  a[index] += value
  return a


def test_indices_gather_exactly_the_masks_and_cut_to_a_random_subset():
  context, targets = masks.ijepa_masks(jax.random.key(0), 64, GRID)
  context, targets = np.asarray(context), np.asarray(targets)
  m = masks.ijepa_max_block_area(GRID, (0.15, 0.2), (0.75, 1.5))
  for k in (64, 32, 20):
    ids, valid, t_ids, t_valid = (np.asarray(a) for a in masks.ijepa_indices(
        jax.random.key(k), context, targets, k, m))
    assert ids.shape == valid.shape == (64, k) and t_ids.shape == t_valid.shape == (64, 4, m)
    for i in range(64):
      kept = set(ids[i][valid[i]].tolist())
      drawn = set(np.flatnonzero(context[i]).tolist())
      assert len(set(ids[i].tolist())) == k  # no patch twice
      assert list(ids[i]) == sorted(ids[i])  # raster order
      assert kept <= drawn and len(kept) == min(k, len(drawn))  # a cut only past k patches
      for j in range(4):  # every target patch has a slot, in raster order, then padding
        assert t_ids[i, j][t_valid[i, j]].tolist() == np.flatnonzero(targets[i, j]).tolist()
        assert not t_valid[i, j][t_valid[i, j].sum():].any()
  # The cut keeps a random subset, not the first patches: over images with more than 20 context
  # patches, kept patches come from the whole span of their context.
  ids, valid, _, _ = (np.asarray(a) for a in masks.ijepa_indices(
      jax.random.key(9), context, targets, 20, m))
  late = [np.flatnonzero(context[i])[-1] in ids[i] for i in range(64) if context[i].sum() > 25]
  assert 0 < np.mean(late) < 1
  with pytest.raises(ValueError, match='context_tokens'):
    masks.ijepa_indices(jax.random.key(0), context, targets, 0, m)


def test_prediction_reads_only_the_context_and_its_own_block():
  fn, tokens, _, targets, indices = predictor_setup()
  ids, valid, t_ids, t_valid = indices
  base = np.asarray(fn(tokens, *indices))
  assert base.shape == (3, 4, t_ids.shape[2], 8) and np.isfinite(base).all()
  for i in range(3):
    pad = np.flatnonzero(~valid[i])
    inside = np.flatnonzero(valid[i])
    for j in range(4):
      tv = t_valid[i, j]
      # A padding slot's encoding (a patch outside the kept context) moves nothing.
      moved = np.asarray(fn(bump(tokens, (i, pad[0]), 5.0), *indices))
      np.testing.assert_array_equal(moved[i, j][tv], base[i, j][tv])
      # A context slot's encoding does move the block's predictions.
      moved = np.asarray(fn(bump(tokens, (i, inside[0]), 5.0), *indices))
      assert np.abs(moved[i, j][tv] - base[i, j][tv]).max() > 1e-3
      # The predictions are read at the block's positions: they follow the patch indices.
      assert np.asarray(targets)[i, j][t_ids[i, j][tv]].all()
  # Another image's tokens never matter.
  moved = np.asarray(fn(bump(tokens, 1, 3.0), *indices))
  np.testing.assert_array_equal(moved[0], base[0])
  np.testing.assert_array_equal(moved[2], base[2])


def test_target_blocks_are_independent_and_seen_only_by_position():
  fn, tokens, context, _, indices = predictor_setup()
  ids, valid, t_ids, t_valid = indices
  base = np.asarray(fn(tokens, *indices))
  # Move block 2 of image 0 to three other patches outside the context: every other block's
  # whole output is unchanged, block 2's changes (its queries are positions, nothing else).
  free = np.flatnonzero(~context[0] & ~np.isin(np.arange(64), t_ids[0, 2][t_valid[0, 2]]))
  moved_ids, moved_valid = t_ids.copy(), t_valid.copy()
  moved_ids[0, 2, :] = free[0]
  moved_ids[0, 2, :3] = free[:3]
  moved_valid[0, 2] = np.arange(t_ids.shape[2]) < 3
  moved = np.asarray(fn(tokens, ids, valid, moved_ids, moved_valid))
  for j in (0, 1, 3):
    np.testing.assert_allclose(moved[0, j], base[0, j], rtol=0, atol=1e-6)
  assert np.abs(moved[0, 2, :3] - base[0, 2, :3]).max() > 1e-3
  np.testing.assert_allclose(moved[1:], base[1:], rtol=0, atol=1e-6)
  # Each block's predictions equal those of the predictor run with that block alone.
  for j in range(4):
    alone = np.asarray(fn(tokens, ids, valid, t_ids[:, j:j + 1], t_valid[:, j:j + 1]))[:, 0]
    np.testing.assert_allclose(alone[t_valid[:, j]], base[:, j][t_valid[:, j]], rtol=1e-5,
                               atol=1e-5)


def test_predictor_checks_shapes():
  fn, tokens, _, _, indices = predictor_setup()
  ids, valid, t_ids, t_valid = indices
  pred = IJEPAPredictor(width=16, depth=1, num_heads=2, out_width=8)
  with pytest.raises(ValueError, match='target_ids must be'):
    pred.init(jax.random.key(0), tokens, ids, valid, t_ids[0], t_valid[0], GRID)
  with pytest.raises(ValueError, match='context_valid must be'):
    pred.init(jax.random.key(0), tokens, ids, valid[:, :3], t_ids, t_valid, GRID)
  with pytest.raises(ValueError, match='target_valid must be'):
    pred.init(jax.random.key(0), tokens, ids, valid, t_ids, t_valid[:, :2], GRID)


# ------------------------------------------------------------------------- the method's parts

@pytest.mark.slow  # kept out of the default suite for its time
def test_end_to_end_predictions_ignore_pixels_outside_context_and_block():
  method, params, _ = built()
  x = np.asarray(method.normalize(images(2)))
  indices, _ = method.draw_indices(jax.random.key(4), 2)
  fn = jax.jit(lambda x: method.predict(params, x, indices, train=False))
  base = np.asarray(fn(x))
  ids, valid, t_ids, t_valid = (np.asarray(a) for a in indices)
  seen = set(ids[0][valid[0]].tolist()) | set(t_ids[0, 1][t_valid[0, 1]].tolist())
  p = next(q for q in range(64) if q not in seen)
  r, c = divmod(int(p), 8)
  moved = np.asarray(fn(bump(x, np.s_[0, 4 * r:4 * r + 4, 4 * c:4 * c + 4], 1.0)))
  tv = t_valid[0, 1]
  np.testing.assert_allclose(moved[0, 1][tv], base[0, 1][tv], atol=1e-6)
  q = ids[0][valid[0]][0]
  r, c = divmod(int(q), 8)
  moved = np.asarray(fn(bump(x, np.s_[0, 4 * r:4 * r + 4, 4 * c:4 * c + 4], 1.0)))
  assert np.abs(moved[0, 1][tv] - base[0, 1][tv]).max() > 1e-4


def reference_loss(predictions, target_tokens, t_ids, t_valid):
  """float64 NumPy: mean over blocks of the masked mean of mean_D (pred - layernorm(target))^2,
  the target read at each slot's patch."""
  p, t = np.asarray(predictions, np.float64), np.asarray(target_tokens, np.float64)
  t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-6)
  n, num_t, m = t_ids.shape
  per = np.zeros((n, num_t, m))
  for i in range(n):
    for j in range(num_t):
      per[i, j] = ((p[i, j] - t[i][t_ids[i, j]]) ** 2).mean(-1)
  return np.mean([(per[:, j] * t_valid[:, j]).sum() / t_valid[:, j].sum()
                  for j in range(num_t)])


def test_loss_equals_a_float64_recomputation():
  method, params, method_state = built()
  batch = {'view_0': images(4, seed=1)}
  rng = jax.random.key(7)
  loss, (_, new_state, metrics) = jax.jit(method.loss_fn)(params, {}, method_state, batch, rng, 5)
  # The same masks as loss_fn (its rng split), the module outputs, the loss in NumPy.
  mask_rng, drop_rng = jax.random.split(rng)
  x = method.normalize(batch['view_0'])
  indices, (context, _) = method.draw_indices(mask_rng, 4)
  target_tokens = jax.jit(method.target_tokens)(method_state['target_params'], x)
  predictions = jax.jit(method.predict)(params, x, indices, drop_rng)
  _, valid, t_ids, t_valid = (np.asarray(a) for a in indices)
  want = reference_loss(predictions, target_tokens, t_ids, t_valid)
  np.testing.assert_allclose(float(loss), want, rtol=1e-5)
  assert float(metrics['loss']) == float(loss)
  np.testing.assert_allclose(float(metrics['tau']), 0.99 + 0.01 * 5 / 100, rtol=1e-6)
  np.testing.assert_allclose(float(metrics['context_fraction']), valid.sum(1).mean() / 64,
                             rtol=1e-6)
  drawn = np.asarray(context).sum(1)
  np.testing.assert_allclose(float(metrics['context_cut']), np.mean(1 - valid.sum(1) / drawn),
                             rtol=1e-5, atol=1e-7)
  assert 0 < float(metrics['target_std']) < 1
  assert new_state is method_state or jax.tree.all(jax.tree.map(
      lambda a, b: bool(jnp.all(a == b)), new_state, method_state))
  # The target tokens are the target encoder on every patch of the whole image, with no mask:
  # target weights equal to the encoder's give the encoder's own unmasked tokens.
  full = jax.jit(method.encoder.apply, static_argnums=2)({'params': params['encoder']}, x,
                                                         False)['patch_tokens']
  np.testing.assert_allclose(np.asarray(jax.jit(method.target_tokens)(params['encoder'], x)),
                             np.asarray(full), atol=1e-6)


def test_gathered_context_equals_the_masked_full_grid():
  """With no cut, the gathered context encoder and predictor give what the encoder with a key
  mask over the whole grid gives: the cost follows the context's size, the values do not."""
  method, params, _ = built()
  x = method.normalize(images(3, seed=4))
  full = dataclasses.replace(method, context_tokens=0)
  cut = dataclasses.replace(method, context_tokens=30)
  indices, (context, _) = full.draw_indices(jax.random.key(2), 3)
  enc = jax.jit(lambda x, kw: method.encoder.apply({'params': params['encoder']}, x, False,
                                                   **kw))
  masked = np.asarray(enc(x, {'token_mask': context})['patch_tokens'])
  gathered = np.asarray(enc(x, {'ids_keep': indices[0], 'token_mask': indices[1]})[
      'patch_tokens'])
  ids, valid = np.asarray(indices[0]), np.asarray(indices[1])
  for i in range(3):
    np.testing.assert_allclose(gathered[i][valid[i]], masked[i][ids[i][valid[i]]], atol=2e-5)
  # The cut changes only which context patches are kept.
  cut_indices, _ = cut.draw_indices(jax.random.key(2), 3)
  for a, b in zip(cut_indices[2:], indices[2:]):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  cut_ids, cut_valid = np.asarray(cut_indices[0]), np.asarray(cut_indices[1])
  for i in range(3):
    assert set(cut_ids[i][cut_valid[i]]) <= set(ids[i][valid[i]])
    assert cut_valid[i].sum() == min(30, valid[i].sum())


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
  assert (c30.total_steps, c30.batch_size, c30.data.source) == (1300, 256, 'tfds:cifar10')
  assert (c30.method.context_tokens, t.method.context_tokens) == (32, 32)
  assert get_config('imagenet').method.context_tokens == 0  # nothing cut
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
