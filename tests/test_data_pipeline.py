"""The tf.data pipeline: shapes, determinism, exact restarts, process splits, eval padding."""

import numpy as np
import pytest

tf = pytest.importorskip('tensorflow')

from jssl.data import config as config_lib  # noqa: E402
from jssl.data import pipeline  # noqa: E402


class _CropFlip:
  """A stand-in recipe: two stateless random 8x8 crops with random flips, in [0, 1]."""
  view_shapes = {'view_0': (8, 8, 3), 'view_1': (8, 8, 3)}

  def __call__(self, image, seed):
    seeds = tf.random.experimental.stateless_split(seed, 4)
    x = tf.cast(image, tf.float32) / 255.0
    views = {}
    for v in range(2):
      crop = tf.image.stateless_random_crop(x, [8, 8, 3], seeds[2 * v])
      views[f'view_{v}'] = tf.image.stateless_random_flip_left_right(crop, seeds[2 * v + 1])
    return views


def _cfg(n=40, size=12, classes=5):
  cfg = config_lib.data_config()
  cfg.source = cfg.eval_source = 'synthetic'
  cfg.synthetic.update(image_size=size, num_examples=n, num_classes=classes)
  return cfg


def _take(it, k):
  return [next(it) for _ in range(k)]


def _equal(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_shapes_dtypes_and_ranges():
  it = pipeline.train_iterator(_cfg(), 8, seed=0, recipe=_CropFlip())
  batch = next(it)
  assert set(batch) == {'view_0', 'view_1', 'label', 'index'}
  for v in ('view_0', 'view_1'):
    assert batch[v].shape == (8, 8, 8, 3) and batch[v].dtype == np.float32
    assert 0.0 <= batch[v].min() and batch[v].max() <= 1.0
  assert batch['label'].dtype == np.int32 and batch['index'].dtype == np.int32
  np.testing.assert_array_equal(batch['label'], batch['index'] % 5)
  assert it.steps_per_epoch == 5


def _real_recipe(on_device):
  augment = pytest.importorskip('jssl.data.augment')
  cfg = config_lib.data_config()
  cfg.augment = augment.recipe_defaults(cfg.recipe)
  cfg.on_device_photometric = on_device
  batch = next(pipeline.train_iterator(cfg, 4, seed=0))
  # Geometry only on the host: uint8 views (the device scales them); otherwise float32 in [0, 1].
  dtype, top = (np.uint8, 255) if on_device else (np.float32, 1.0)
  for name, shape in augment.make_recipe(cfg.recipe).view_shapes.items():
    assert batch[name].shape == (4,) + shape and batch[name].dtype == dtype
    assert 0 <= batch[name].min() and batch[name].max() <= top


def test_real_recipe_from_config_geometry_on_host():
  _real_recipe(on_device=True)


@pytest.mark.slow
def test_real_recipe_from_config_all_on_host():
  _real_recipe(on_device=False)


def test_determinism_restart_and_epochs():
  cfg = _cfg()
  full = _take(pipeline.train_iterator(cfg, 8, seed=3, recipe=_CropFlip()), 8)
  again = _take(pipeline.train_iterator(cfg, 8, seed=3, recipe=_CropFlip()), 8)
  assert all(_equal(a, b) for a, b in zip(full, again))
  other = next(pipeline.train_iterator(cfg, 8, seed=4, recipe=_CropFlip()))
  assert not np.array_equal(other['index'], full[0]['index'])
  # Restart at step 3: steps 3..7 bitwise equal, across the epoch boundary (5 steps per epoch).
  resumed = _take(pipeline.train_iterator(cfg, 8, seed=3, start_step=3, recipe=_CropFlip()), 5)
  assert all(_equal(a, b) for a, b in zip(full[3:], resumed))
  # Each epoch is a permutation of all 40 examples, reshuffled per epoch.
  epoch0 = np.concatenate([b['index'] for b in full[:5]])
  np.testing.assert_array_equal(np.sort(epoch0), np.arange(40))
  assert not np.array_equal(epoch0[:8], full[5]['index'])


def test_process_parts_are_disjoint_and_make_the_global_batch():
  cfg = _cfg()
  whole = _take(pipeline.train_iterator(cfg, 8, seed=1, recipe=_CropFlip()), 2)
  parts = [_take(pipeline.train_iterator(cfg, 8, seed=1, process_index=p, process_count=2,
                                         recipe=_CropFlip()), 2) for p in range(2)]
  for step in range(2):
    p0, p1 = parts[0][step], parts[1][step]
    assert p0['view_0'].shape[0] == 4
    assert not set(p0['index'].tolist()) & set(p1['index'].tolist())
    for key in whole[step]:
      np.testing.assert_array_equal(np.concatenate([p0[key], p1[key]]), whole[step][key])


def test_batch_size_divisibility_errors():
  with pytest.raises(ValueError, match='batch_size 10 .*processes \\(4\\)'):
    pipeline.train_iterator(_cfg(), 10, seed=0, process_count=4, recipe=_CropFlip())
  with pytest.raises(ValueError, match='batch_size 12 .*devices \\(8\\)'):
    pipeline.train_iterator(_cfg(), 12, seed=0, num_devices=8, recipe=_CropFlip())
  with pytest.raises(ValueError, match='batch_size 64 is larger'):
    pipeline.train_iterator(_cfg(), 64, seed=0, recipe=_CropFlip())


def test_eval_every_example_once_in_order_with_padding():
  cfg = _cfg(n=10)
  it = pipeline.eval_iterator(cfg, 4, recipe=_CropFlip())
  batches = list(it)
  assert len(it) == len(batches) == 3
  valid = np.concatenate([b['valid'] for b in batches])
  index = np.concatenate([b['index'] for b in batches])
  np.testing.assert_array_equal(index[valid], np.arange(10))
  assert valid.sum() == 10 and not valid[10:].any()
  assert set(batches[0]) == {'view_0', 'view_1', 'label', 'index', 'valid'}
  parts = [list(pipeline.eval_iterator(cfg, 4, process_index=p, process_count=2,
                                       recipe=_CropFlip())) for p in range(2)]
  assert len(parts[0]) == len(parts[1]) == 3
  for step in range(3):
    np.testing.assert_array_equal(
        np.concatenate([parts[0][step]['index'], parts[1][step]['index']]),
        batches[step]['index'])


def test_eval_max_examples_spreads_evenly_over_the_split():
  """A capped bank takes examples floor(j * n / m), so a class-sorted split keeps every class."""
  cfg = _cfg(n=10)
  batches = list(pipeline.eval_iterator(cfg, 4, recipe=_CropFlip(), max_examples=4))
  assert len(batches) == 1
  index, valid = batches[0]['index'], batches[0]['valid']
  np.testing.assert_array_equal(index[valid], [0, 2, 5, 7])
  labels = {int(i): int(l) for i, l in zip(index, batches[0]['label'])}
  whole = {int(i): int(l) for b in pipeline.eval_iterator(cfg, 4, recipe=_CropFlip())
           for i, l in zip(b['index'], b['label'])}
  assert all(whole[i] == l for i, l in labels.items())
  everything = list(pipeline.eval_iterator(cfg, 4, recipe=_CropFlip(), max_examples=50))
  np.testing.assert_array_equal(
      np.concatenate([b['index'][b['valid']] for b in everything]), np.arange(10))


def test_eval_raw_pixels_resized():
  cfg = _cfg(n=6, size=20)
  cfg.image_size = 10
  batch = next(pipeline.eval_iterator(cfg, 6, raw=True))
  assert batch['image'].shape == (6, 10, 10, 3) and batch['image'].dtype == np.uint8
  embedded = config_lib.data_config()
  raw = next(pipeline.eval_iterator(embedded, 8, raw=True))
  assert raw['image'].shape == (8, 32, 32, 3)
  info = pipeline.dataset_info('synthetic', synthetic={'image_size': 4, 'num_examples': 7,
                                                       'num_classes': 3})
  assert info['num_examples'] == 7 and info['num_classes'] == 3
