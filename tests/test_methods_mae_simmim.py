"""MAE and SimMIM: masking invariants, the loss path, 1 device == 8 devices, the presets."""

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses, methods
from jssl.data import masks as data_masks
from jssl.methods import masking
from jssl.models.mae_decoder import MAEDecoder
from jssl.train import optim, sharding
from jssl.train import state as state_lib
from jssl.train import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def get_config(name, preset=None):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}',
                                                os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def small_config(name):
  """The tiny preset shrunk: a 1-block ViT, width 32, patch 4 on 16 px views."""
  c = get_config(name)
  c.model.update(width=32, depth=1, num_heads=2, patch_size=4)
  c.data.augment.image_size = 16
  if name == 'mae':
    c.method.update(decoder_width=16, decoder_depth=1, decoder_num_heads=2)
  else:
    c.data.augment.update(mask_patch_size=8, model_patch_size=4)
  return c


def make_batch(method, n=16, seed=0):
  rng = np.random.default_rng(seed)
  batch = {}
  for k, (shape, dtype) in method.input_spec().items():
    if k == 'mask':
      batch[k] = rng.integers(0, 2, (n,) + tuple(shape)).astype(np.int32)
    else:
      batch[k] = rng.random((n,) + tuple(shape), dtype=np.float32)
  return batch


@functools.lru_cache(maxsize=None)
def built(name):
  """(method, params) of the small config, initialised once."""
  method = methods.build(small_config(name), 100)
  params, batch_stats, method_state = jax.jit(method.init)(jax.random.PRNGKey(0),
                                                           make_batch(method, 2))
  assert batch_stats == {} and method_state == {}
  return method, params


@functools.lru_cache(maxsize=None)
def jitted(name):
  """(method, params, jitted forward, jitted loss_fn) of the small config."""
  method, params = built(name)
  forward = jax.jit(method.forward, static_argnames='train')
  return method, params, forward, jax.jit(method.loss_fn)


# ---------------------------------------------------------------------------------- masking --

@pytest.mark.parametrize('num_patches,ratio', [(64, 0.75), (196, 0.75), (10, 0.9), (16, 0.5)])
def test_random_masking_invariants(num_patches, ratio):
  n = 8
  ids_keep, ids_restore, mask = jax.device_get(
      masking.random_masking(jax.random.PRNGKey(3), n, num_patches, ratio))
  keep = masking.keep_count(num_patches, ratio)
  assert keep == int(round(num_patches * (1 - ratio)))
  assert ids_keep.shape == (n, keep) and ids_restore.shape == mask.shape == (n, num_patches)
  np.testing.assert_array_equal(mask.sum(1), num_patches - keep)  # exact ratio, every example
  for b in range(n):
    assert len(set(ids_keep[b].tolist())) == keep  # kept indices unique
    assert sorted(ids_restore[b].tolist()) == list(range(num_patches))  # a permutation
    np.testing.assert_array_equal(mask[b, ids_keep[b]], 0)  # kept patches are visible
  # restore order: unshuffling [visible values, fill] puts each visible value back in place
  x = np.tile(np.arange(num_patches), (n, 1))
  kept = np.take_along_axis(x, ids_keep, 1)
  full = np.concatenate([kept, -np.ones((n, num_patches - keep), int)], 1)
  restored = np.take_along_axis(full, ids_restore, 1)
  np.testing.assert_array_equal(restored, np.where(mask == 1, -1, x))
  # the same draws as jssl.data's host-independent version
  want = data_masks.mae_random_masking(jax.random.PRNGKey(3), n, num_patches, ratio)
  for a, b in zip((ids_keep, ids_restore, mask), want):
    np.testing.assert_array_equal(a, b)
  # different examples get different masks
  assert not np.all(mask == mask[:1])


def test_upsample_mask():
  m = np.random.default_rng(0).integers(0, 2, (3, 4, 5)).astype(np.int32)
  want = np.stack([np.kron(x, np.ones((4, 4), np.int32)) for x in m])
  np.testing.assert_array_equal(masking.upsample_mask(m, 4), want)


# -------------------------------------------------------------------------------------- MAE --

def test_mae_decoder_unshuffles_visible_tokens():
  """Presenting the visible tokens in another order, with its ids_restore, gives the same output."""
  dec = MAEDecoder(width=16, depth=1, num_heads=2, patch_size=2)
  n, num, keep, d = 2, 16, 4, 8
  ids_keep, ids_restore, _ = masking.random_masking(jax.random.PRNGKey(0), n, num, 0.75)
  tokens = jax.random.normal(jax.random.PRNGKey(1), (n, 1 + keep, d))
  params = jax.jit(lambda: dec.init(jax.random.PRNGKey(2), tokens, ids_restore, (4, 4)))()
  apply = jax.jit(lambda t, r: dec.apply(params, t, r, (4, 4)))
  pred = apply(tokens, ids_restore)
  assert pred.shape == (n, num, 2 * 2 * 3)
  perm = np.array([2, 0, 3, 1])
  ids_keep2 = np.asarray(ids_keep)[:, perm]
  shuffle2 = np.concatenate([ids_keep2, np.asarray(jnp.argsort(ids_restore, 1))[:, keep:]], 1)
  restore2 = np.argsort(shuffle2, 1)
  tokens2 = jnp.concatenate([tokens[:, :1], tokens[:, 1:][:, perm]], 1)
  pred2 = apply(tokens2, restore2)
  np.testing.assert_allclose(pred, pred2, rtol=1e-5, atol=1e-5)
  # and a wrong restore order (the shuffle itself) does change it
  wrong = apply(tokens, jnp.argsort(ids_restore, 1))
  assert np.abs(np.asarray(wrong) - np.asarray(pred)).max() > 1e-3


def test_mae_encoder_sees_only_visible_patches():
  method, params, forward, loss_fn = jitted('mae')
  batch = make_batch(method, 4)
  x = method.normalize(batch['view_0'])
  rng = jax.random.PRNGKey(5)
  pred, mask, tokens = forward(params, x, rng)
  num = (16 // 4) ** 2
  keep = masking.keep_count(num, 0.75)
  assert tokens.shape == (4, 1 + keep, 32)  # CLS + the visible patches only
  assert pred.shape == (4, num, 4 * 4 * 3) and mask.shape == (4, num)
  # changing the pixels of masked patches leaves the encoder's output unchanged
  patches = np.asarray(losses.patchify(batch['view_0'], 4))
  noisy = np.where(np.asarray(mask)[..., None] == 1, np.random.default_rng(1).random(
      patches.shape, dtype=np.float32), patches)
  x2 = method.normalize(losses.unpatchify(jnp.asarray(noisy), 4, 16, 16))
  _, mask2, tokens2 = forward(params, x2, rng)
  np.testing.assert_array_equal(mask, mask2)
  np.testing.assert_allclose(tokens, tokens2, rtol=1e-6, atol=1e-6)
  # ...while changing a visible patch does change it
  vis = np.where(np.asarray(mask)[..., None] == 0, 1.0 - patches, patches)
  x3 = method.normalize(losses.unpatchify(jnp.asarray(vis, jnp.float32), 4, 16, 16))
  assert np.abs(np.asarray(forward(params, x3, rng)[2] - tokens)).max() > 1e-3


def test_mae_loss_is_mae_loss_on_masked_patches():
  method, params, forward, loss_fn = jitted('mae')
  batch = make_batch(method, 4)
  rng = jax.random.PRNGKey(7)
  loss, (bs, ms, metrics) = loss_fn(params, {}, {}, batch, rng, 0)
  assert bs == {} and ms == {} and float(metrics['loss']) == float(loss)
  x = method.normalize(batch['view_0'])
  pred, mask, _ = forward(params, x, rng)
  target = losses.patchify(x, 4)
  np.testing.assert_allclose(loss, losses.mae_loss(pred, target, mask, norm_pix_loss=True),
                             rtol=1e-6)
  # by hand: per-patch normalized target, MSE per patch, mean over the masked patches only
  t = np.asarray(target, np.float64)
  t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, ddof=1, keepdims=True) + 1e-6)
  per_patch = ((np.asarray(pred, np.float64) - t) ** 2).mean(-1)
  m = np.asarray(mask)
  np.testing.assert_allclose(loss, (per_patch * m).sum() / m.sum(), rtol=1e-5)
  assert abs(per_patch.mean() - (per_patch * m).sum() / m.sum()) > 1e-4  # the mask matters


def test_mae_reconstruct_and_features():
  method, params, forward, loss_fn = jitted('mae')
  images = make_batch(method, 4)['view_0']
  pred, mask = jax.jit(method.reconstruct)(params, images, jax.random.PRNGKey(0))
  assert pred.shape == images.shape and mask.shape == images.shape[:3]
  assert float(pred.min()) >= 0 and float(pred.max()) <= 1
  np.testing.assert_allclose(np.asarray(mask).mean((1, 2)), 0.75)
  # the mask is constant on each patch
  m = np.asarray(mask)
  np.testing.assert_array_equal(m, np.repeat(np.repeat(m[:, ::4, ::4], 4, 1), 4, 2))
  features = jax.jit(method.features)
  f = features(params, {}, images)
  assert f.shape == (4, 32)
  np.testing.assert_allclose(f, features(params, {}, images), rtol=1e-6)  # no masking


# ----------------------------------------------------------------------------------- SimMIM --

def test_simmim_loss_reads_the_batch_mask_and_counts_masked_pixels_only():
  method, params, forward, loss_fn = jitted('simmim')
  batch = make_batch(method, 4)
  assert batch['mask'].shape == (4, 4, 4)
  loss, (bs, ms, _) = loss_fn(params, {}, {}, batch, jax.random.PRNGKey(0), 0)
  assert bs == {} and ms == {}
  x = method.normalize(batch['view_0'])
  pred = forward(params, x, batch['mask'], jax.random.PRNGKey(0))
  pix = masking.upsample_mask(batch['mask'], 4)
  np.testing.assert_allclose(loss, losses.simmim_loss(pred, x, pix), rtol=1e-6)
  err = np.abs(np.asarray(pred, np.float64) - np.asarray(x, np.float64))
  m = np.asarray(pix, np.float64)[..., None]
  np.testing.assert_allclose(loss, (err * m).sum() / (m.sum() + 1e-5) / 3, rtol=1e-5)
  # another mask in the batch: another loss; an empty mask: zero loss
  other = dict(batch, mask=1 - batch['mask'])
  loss2 = loss_fn(params, {}, {}, other, jax.random.PRNGKey(0), 0)[0]
  assert abs(float(loss2) - float(loss)) > 1e-4
  empty = dict(batch, mask=np.zeros_like(batch['mask']))
  assert float(loss_fn(params, {}, {}, empty, jax.random.PRNGKey(0), 0)[0]) == 0.0
  # the mask token replaces masked patches: their pixels do not reach the encoder
  noisy = np.where(np.asarray(pix)[..., None] == 1, 0.5, batch['view_0']).astype(np.float32)
  pred_noisy = forward(params, method.normalize(noisy), batch['mask'], jax.random.PRNGKey(0))
  np.testing.assert_allclose(pred, pred_noisy,
                             rtol=1e-5, atol=1e-5)
  f = jax.jit(method.features)(params, {}, batch['view_0'])
  assert f.shape == (4, 32)


# --------------------------------------------------------------------- engine, 1 vs 8 devices --

@functools.lru_cache(maxsize=None)
def _initial(name):
  """(method, tx, schedule, host copy of the initial state) of the small config, built once."""
  config = small_config(name)
  method = methods.build(config, 100)
  tx, schedule = optim.build(config.optim, 16, 100, 2)
  mesh = sharding.make_mesh(jax.devices()[:1])
  return method, tx, schedule, jax.device_get(
      state_lib.create(method, tx, 0, sharding.replicated(mesh)))


def _state_and_step(name, n_devices):
  method, tx, schedule, host = _initial(name)
  mesh = sharding.make_mesh(jax.devices()[:n_devices])
  state = jax.device_put(host, sharding.replicated(mesh))
  return method, mesh, state, step_lib.make_train_step(method, tx, mesh, schedule)


@pytest.mark.parametrize('name', ['mae', 'simmim'])
def test_one_device_equals_eight_devices(name):
  assert jax.device_count() >= 8, 'tests/conftest.py sets 8 emulated CPU devices'
  results = {}
  for n in (1, 8):
    method, mesh, state, train_step = _state_and_step(name, n)
    init = jax.device_get(state.params)
    for step in range(2):  # the warm-up's first learning rate is 0: the second step moves
      state, metrics = train_step(state, sharding.put_batch(make_batch(method, seed=step), mesh))
    results[n] = jax.device_get((state, metrics))
  (s1, m1), (s8, m8) = results[1], results[8]
  assert float(m1['finite']) == 1.0
  np.testing.assert_allclose(m1['loss'], m8['loss'], rtol=1e-5)
  for tree in ('params', 'opt_state', 'method_state'):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 getattr(s1, tree), getattr(s8, tree))
  delta = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), init, s1.params)
  assert max(jax.tree.leaves(delta)) > 1e-5


@pytest.mark.parametrize('name', ['mae', 'simmim'])
@pytest.mark.parametrize('preset', ['tiny', 'cifar10', 'imagenet'])
def test_presets_build(name, preset):
  config = get_config(name, preset)
  method = methods.build(config, 1000)
  size = {'tiny': 32, 'cifar10': 32, 'imagenet': 224}[preset]
  assert method.image_size == size and config.data.recipe == name
  assert config.optim.name == 'adamw' and config.optim.weight_decay == 0.05
  assert method.encoder.patch_size == (16 if preset == 'imagenet' else 4)
  if name == 'simmim':
    assert config.data.augment.model_patch_size == method.encoder.patch_size
    assert config.data.augment.mask_patch_size == (32 if preset == 'imagenet' else 8)
  params = jax.eval_shape(lambda: method.init(jax.random.PRNGKey(0),
                                              make_batch(method, 2))[0])
  if preset == 'imagenet':
    assert params['encoder']['block11']['attn']['qkv']['kernel'].shape == (768, 3 * 768)
    if name == 'mae':
      assert config.optim.b2 == 0.95 and config.batch_size == 4096
      assert params['decoder']['block7']['attn']['qkv']['kernel'].shape == (512, 3 * 512)
      assert params['decoder']['pred']['kernel'].shape == (512, 16 * 16 * 3)
    else:
      assert params['head']['kernel'].shape == (768, 16 * 16 * 3)


@pytest.mark.slow  # ~1 min per method on 2 CPU cores (compiling the tiny ViT's init and step);
# test_one_device_equals_eight_devices runs the same step code on a 1-block ViT in the fast set.
@pytest.mark.parametrize('name', ['mae', 'simmim'])
def test_tiny_preset_trains_one_step(name):
  config = get_config(name)
  method = methods.build(config, 10)
  tx, schedule = optim.build(config.optim, 8, 10, 1)
  mesh = sharding.make_mesh(jax.devices()[:1])
  state = state_lib.create(method, tx, 0, sharding.replicated(mesh))
  train_step = step_lib.make_train_step(method, tx, mesh, schedule)
  batch = make_batch(method, 8)
  if name == 'simmim':  # the data recipe's kind of mask
    batch['mask'] = np.asarray(data_masks.simmim_mask(jax.random.PRNGKey(0), 8, 32, 8, 4, 0.6))
    np.testing.assert_array_equal(batch['mask'].reshape(8, -1).sum(1), 10 * 4)
  state, metrics = train_step(state, sharding.put_batch(batch, mesh))
  assert int(state.step) == 1 and float(metrics['finite']) == 1.0
  assert np.isfinite(float(metrics['loss'])) and float(metrics['loss']) > 0
