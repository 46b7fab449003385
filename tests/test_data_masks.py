"""Masks for masked image modeling: MAE (device), SimMIM and BEiT (device and host)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

from jssl.data import augment
from jssl.data import masks
from jssl.data import masks_tf


def _tf_masks(fn, n, **kwargs):
  """n host masks from seeds [0, i] .. inside tf.data (graph mode)."""
  seeds = np.array([[0, i] for i in range(n)], np.int64)
  ds = tf.data.Dataset.from_tensor_slices(seeds).map(lambda s: fn(s, **kwargs)).batch(n)
  return next(iter(ds)).numpy()


# ------------------------------------------------------------------------------------------ MAE

@pytest.mark.parametrize('num_patches,ratio,keep', [(196, 0.75, 49), (64, 0.75, 16),
                                                    (49, 0.6, 19), (10, 0.9, 1)])
def test_mae_counts_uniqueness_and_restore(num_patches, ratio, keep):
  fn = jax.jit(masks.mae_random_masking, static_argnums=(1, 2, 3))
  ids_keep, ids_restore, mask = fn(jax.random.key(0), 5, num_patches, ratio)
  assert masks.mae_keep_count(num_patches, ratio) == keep
  assert ids_keep.shape == (5, keep) and ids_keep.dtype == jnp.int32
  assert ids_restore.shape == (5, num_patches) and ids_restore.dtype == jnp.int32
  assert mask.shape == (5, num_patches) and mask.dtype == jnp.float32
  ids_keep, ids_restore, mask = map(np.asarray, (ids_keep, ids_restore, mask))
  np.testing.assert_array_equal(mask.sum(1), num_patches - keep)
  for b in range(5):
    assert len(set(ids_keep[b])) == keep
    assert (mask[b, ids_keep[b]] == 0).all()
    assert sorted(ids_restore[b]) == list(range(num_patches))
  # MAE's use: keep, append mask tokens (-1), unshuffle with ids_restore.
  x = np.arange(num_patches)[None].repeat(5, 0)
  kept = np.take_along_axis(x, ids_keep, 1)
  full = np.concatenate([kept, -np.ones((5, num_patches - keep), int)], 1)
  restored = np.take_along_axis(full, ids_restore, 1)
  np.testing.assert_array_equal(restored == -1, mask == 1)
  np.testing.assert_array_equal(np.where(mask == 0, restored, x), x)
  if num_patches > 10:
    assert len({tuple(m) for m in mask}) == 5  # examples differ


def test_mae_is_uniform_and_deterministic():
  a = masks.mae_random_masking(jax.random.key(3), 2000, 16, 0.75)[2]
  b = masks.mae_random_masking(jax.random.key(3), 2000, 16, 0.75)[2]
  np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  freq = np.asarray(a).mean(0)
  assert np.abs(freq - 0.75).max() < 0.05


# --------------------------------------------------------------------------------------- SimMIM

@pytest.mark.parametrize('input_size,mask_patch,model_patch,ratio,count', [
    (224, 32, 16, 0.6, 30), (192, 32, 4, 0.6, 22), (32, 8, 4, 0.6, 10), (32, 8, 8, 0.5, 8)])
def test_simmim_counts_and_blocks(input_size, mask_patch, model_patch, ratio, count):
  grid, scale = input_size // model_patch, mask_patch // model_patch
  assert masks.simmim_mask_count((input_size // mask_patch) ** 2, ratio) == count
  jax_masks = np.asarray(jax.jit(masks.simmim_mask, static_argnums=range(1, 6))(
      jax.random.key(0), 4, input_size, mask_patch, model_patch, ratio))
  tf_masks = _tf_masks(masks_tf.simmim_mask, 4, input_size=input_size,
                       mask_patch_size=mask_patch, model_patch_size=model_patch,
                       mask_ratio=ratio)
  for m in list(jax_masks) + list(tf_masks):
    assert m.shape == (grid, grid) and m.dtype == np.int32
    coarse = m[::scale, ::scale]
    np.testing.assert_array_equal(np.kron(coarse, np.ones((scale, scale), np.int32)), m)
    assert coarse.sum() == count


def test_simmim_uniform_and_seeded():
  freq = np.asarray(masks.simmim_mask(jax.random.key(1), 1000, 32, 8, 4, 0.6)).mean(0)
  assert np.abs(freq - 10 / 16).max() < 0.07
  tf_freq = _tf_masks(masks_tf.simmim_mask, 400, input_size=32, mask_patch_size=8,
                      model_patch_size=4).mean(0)
  assert np.abs(tf_freq - 10 / 16).max() < 0.1
  seed = tf.constant([5, 6], tf.int64)
  np.testing.assert_array_equal(masks_tf.simmim_mask(seed), masks_tf.simmim_mask(seed))
  assert not np.array_equal(masks_tf.simmim_mask(seed), masks_tf.simmim_mask(seed + 1))


# ----------------------------------------------------------------------------------------- BEiT

def _beit_reference(rng, rows=14, cols=14, target=75, min_patches=16, max_patches=None,
                    min_aspect=0.3):
  """BEiT's MaskingGenerator (Bao et al.), transcribed with a numpy Generator."""
  max_patches = max_patches or target
  log_ratio = (math.log(min_aspect), math.log(1 / min_aspect))
  mask = np.zeros((rows, cols), np.int32)
  count = 0
  while count < target:
    budget = min(target - count, max_patches)
    delta = 0
    for _ in range(10):
      area = min_patches + (budget - min_patches) * rng.random()  # random.uniform(a, b)
      aspect = math.exp(rng.uniform(*log_ratio))
      h = int(round(math.sqrt(area * aspect)))
      w = int(round(math.sqrt(area / aspect)))
      if w < cols and h < rows:
        top = rng.integers(0, rows - h + 1)
        left = rng.integers(0, cols - w + 1)
        new = h * w - mask[top:top + h, left:left + w].sum()
        if 0 < new <= budget:
          mask[top:top + h, left:left + w] = 1
          delta = new
      if delta > 0:
        break
    if delta == 0:
      break
    count += delta
  return mask


def _components(m):
  """Number of 4-connected components of a binary mask."""
  import scipy.ndimage  # pylint: disable=g-import-not-at-top
  return scipy.ndimage.label(m)[1]


def _summary(ms):
  counts = ms.sum((1, 2))
  return (counts.mean(), (counts == 75).mean(), np.mean([_components(m) for m in ms]),
          ms.mean(0))


def test_beit_matches_the_reference_in_distribution():
  n = 300
  rng = np.random.default_rng(0)
  ref = np.stack([_beit_reference(rng) for _ in range(n)])
  dev = np.asarray(jax.jit(masks.beit_mask, static_argnums=(1,))(jax.random.key(0), n))
  host = _tf_masks(masks_tf.beit_mask, n)
  r_mean, r_full, r_comp, r_freq = _summary(ref)
  assert r_mean > 70 and ref.sum((1, 2)).max() == 75
  for ms in (dev, host):
    assert ms.shape == (n, 14, 14) and ms.dtype == np.int32
    assert ms.sum((1, 2)).max() <= 75  # never above the target
    mean, full, comp, freq = _summary(ms)
    assert abs(mean - r_mean) < 1.0
    assert abs(full - r_full) < 0.12
    assert abs(comp - r_comp) < 0.4
    assert np.abs(freq - r_freq).mean() < 0.06  # same spatial profile (centre-heavy)


def test_beit_single_block_shape():
  """Target = min_num_patches = 16 and aspect 1: exactly one 4x4 square, anywhere it fits."""
  kw = dict(grid=(14, 14), num_masking_patches=16, min_num_patches=16, min_aspect=1.0)
  dev = np.asarray(masks.beit_mask(jax.random.key(2), 150, **kw))
  host = _tf_masks(masks_tf.beit_mask, 150, **kw)
  for ms in (dev, host):
    tops = []
    for m in ms:
      rows, cols = np.nonzero(m)
      assert m.sum() == 16
      assert rows.max() - rows.min() == 3 and cols.max() - cols.min() == 3
      tops.append(rows.min())
    assert min(tops) == 0 and max(tops) == 10  # all 11 positions are reachable


def test_beit_blocks_respect_aspect_and_cap():
  """With a per-block cap of 16 each of the five 16-patch blocks is a rectangle; aspect 0.3..3.3
  means no block is thinner than 2 (sqrt(16 * 0.3) rounds to 2)."""
  ms = np.asarray(masks.beit_mask(jax.random.key(4), 50, (14, 14), 80, 16, 16, 0.3))
  assert (ms.sum((1, 2)) <= 80).all() and ms.sum((1, 2)).mean() > 70
  ones = np.ones((2, 2), np.int32)
  for m in ms:  # every masked patch lies in a fully masked 2x2 square (no 1-wide slivers)
    covered = np.zeros_like(m)
    for r in range(13):
      for c in range(13):
        if m[r:r + 2, c:c + 2].all():
          covered[r:r + 2, c:c + 2] = ones
    # Blocks drawn once the budget is below 16 may be thin; allow a few such patches.
    assert (m & (1 - covered)).sum() <= 8


def test_beit_host_mask_is_a_function_of_the_seed():
  seed = tf.constant([3, 4], tf.int64)
  a, b = masks_tf.beit_mask(seed), masks_tf.beit_mask(seed)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, masks_tf.beit_mask(seed + 1))


def test_recipe_masks():
  image = np.random.RandomState(0).randint(0, 256, (64, 64, 3)).astype(np.uint8)
  seeds = np.array([[1, i] for i in range(6)], np.int64)
  for name, params, check in [
      ('simmim', dict(image_size=32, mask_patch_size=8, model_patch_size=4),
       lambda m: m.shape == (8, 8) and m.sum() == 40),
      ('beit', dict(image_size=64, patch_size=8, num_masking_patches=26),
       lambda m: m.shape == (8, 8) and 10 < m.sum() <= 26)]:
    recipe = augment.make_recipe(name, **params)
    ds = tf.data.Dataset.from_tensor_slices(seeds).map(lambda s: recipe(image, s)).batch(6)
    out = next(iter(ds))['mask'].numpy()
    assert out.dtype == np.int32 and all(check(m) for m in out), name
    again = next(iter(ds))['mask'].numpy()
    np.testing.assert_array_equal(out, again)


def test_device_modules_import_without_tensorflow():
  """augment_jax and masks run on accelerator images that lack TensorFlow."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ('import sys; import jssl.data.augment_jax, jssl.data.masks; '
          'assert not [m for m in sys.modules if m.startswith("tensorflow")], "TF imported"')
  subprocess.run([sys.executable, '-c', code], check=True,
                 env=dict(os.environ, JAX_PLATFORMS='cpu'),
                 timeout=120)
