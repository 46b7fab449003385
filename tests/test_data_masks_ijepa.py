"""I-JEPA's multi-block masks: the device version (jssl.data.masks) and the host one (masks_tf)."""

import functools
import math

import jax
import numpy as np
import pytest
import tensorflow as tf

from jssl.data import masks
from jssl.data import masks_tf

DEFAULTS = dict(num_targets=4, target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5),
                context_scale=(0.85, 1.0), context_aspect=(1.0, 1.0), min_context=10)


@functools.lru_cache(maxsize=None)
def _device_fn(grid, **kwargs):
  return jax.jit(lambda key, b: masks.ijepa_masks(key, b, grid, **kwargs), static_argnums=1)


def device_masks(n, grid, seed=0, **kwargs):
  context, targets = _device_fn(grid, **kwargs)(jax.random.key(seed), n)
  return np.asarray(context), np.asarray(targets)


def host_masks(n, grid, **kwargs):
  """n host masks from seeds [0, i], inside tf.data (graph mode)."""
  seeds = np.array([[0, i] for i in range(n)], np.int64)
  ds = tf.data.Dataset.from_tensor_slices(seeds).map(
      lambda s: masks_tf.ijepa_masks(s, grid, **kwargs)).batch(n)
  context, targets = next(iter(ds))
  return context.numpy(), targets.numpy()


def rect(m, grid):
  """`(top, left, h, w)` of a mask that is one filled rectangle (asserted)."""
  m = m.reshape(grid)
  rows, cols = np.nonzero(m)
  top, left = rows.min(), cols.min()
  h, w = rows.max() - top + 1, cols.max() - left + 1
  assert m.sum() == h * w, 'not a filled rectangle'
  return top, left, h, w


def plausible_size(h, w, grid, scale, aspect):
  """Whether some area floor(L s), s in scale, and ratio r in aspect round to (h, w): the area
  in [(h - 1/2)(w - 1/2), (h + 1/2)(w + 1/2)], r in [(h - 1/2)/(w + 1/2), (h + 1/2)/(w - 1/2)]."""
  num = grid[0] * grid[1]
  a_lo, a_hi = max(math.floor(num * scale[0]), 1), max(math.floor(num * scale[1]), 1)
  area_ok = (h - 0.5) * (w - 0.5) <= a_hi and (h + 0.5) * (w + 0.5) >= a_lo
  r_lo, r_hi = (h - 0.5) / (w + 0.5), (h + 0.5) / max(w - 0.5, 1e-9)
  return area_ok and r_lo <= aspect[1] and r_hi >= aspect[0]


def check_invariants(context, targets, grid, **kwargs):
  kw = dict(DEFAULTS, **kwargs)
  num = grid[0] * grid[1]
  n = context.shape[0]
  assert context.shape == (n, num) and context.dtype == bool
  assert targets.shape == (n, kw['num_targets'], num) and targets.dtype == bool
  union = targets.any(1)
  assert not (context & union).any(), 'context overlaps a target'
  assert (context.sum(1) >= kw['min_context']).all()
  for i in range(n):
    for j in range(kw['num_targets']):
      _, _, h, w = rect(targets[i, j], grid)
      assert plausible_size(h, w, grid, kw['target_scale'], kw['target_aspect']), (h, w)
    # The context is a rectangle minus the targets (or the whole image minus them): its
    # bounding box minus the targets gives it back.
    rows, cols = np.nonzero(context[i].reshape(grid))
    box = np.zeros(grid, bool)
    box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
    np.testing.assert_array_equal(box.reshape(-1) & ~union[i], context[i])


@pytest.mark.parametrize('grid', [(8, 8), (14, 14), (6, 10)])
def test_device_masks_shapes_blocks_and_context(grid):
  kwargs = {} if grid != (6, 10) else dict(min_context=4)
  context, targets = device_masks(64, grid, **kwargs)
  check_invariants(context, targets, grid, **kwargs)
  assert len({c.tobytes() for c in context}) > 50  # images differ


@pytest.mark.parametrize('grid', [(8, 8), (14, 14)])
def test_host_masks_shapes_blocks_and_context(grid):
  context, targets = host_masks(64, grid)
  check_invariants(context, targets, grid)
  assert len({c.tobytes() for c in context}) > 50


def test_target_areas_follow_the_scale_on_a_large_grid():
  # On 14x14: areas floor(196 s) in [29, 39] for s in (0.15, 0.2), up to the rounding of h, w.
  _, targets = device_masks(500, (14, 14))
  areas = targets.sum(-1)
  assert areas.min() >= 0.7 * 29 and areas.max() <= 1.3 * 39
  assert abs(areas.mean() - 34) < 3
  assert areas.max() <= masks.ijepa_max_block_area((14, 14), (0.15, 0.2), (0.75, 1.5))


def test_block_sizes_follow_the_python_rule():
  """The device's (h, w) distribution is that of `ijepa_block_hw` on uniform draws: scale and
  aspect independent and uniform (not log-uniform) in their ranges."""
  grid, n = (14, 14), 4000
  _, targets = device_masks(n // 4, grid)
  got = {}
  for m in targets.reshape(n, -1):
    _, _, h, w = rect(m, grid)
    got[(h, w)] = got.get((h, w), 0) + 1 / n
  u = np.random.default_rng(0).random((20000, 2))

  def rule(log_aspect):
    out = {}
    for a, b in u:
      if log_aspect:  # the same range, log-uniform: the ratio of exp(log r) with uniform log r
        b = (math.exp(math.log(0.75) + math.log(2.0) * b) - 0.75) / 0.75
      hw = masks.ijepa_block_hw(grid, (0.15, 0.2), (0.75, 1.5), a, b)
      out[hw] = out.get(hw, 0) + 1 / len(u)
    return out

  tv = lambda p, q: 0.5 * sum(abs(p.get(k, 0) - q.get(k, 0)) for k in set(p) | set(q))
  assert tv(got, rule(False)) < 0.045, (got, rule(False))
  assert tv(got, rule(True)) > 0.05  # the two rules differ by about 0.085 here


def test_placement_is_uniform_and_reaches_every_edge():
  # 4x4 blocks (area 16 = 0.25 of 8x8, aspect 1): 5 x 5 = 25 top-left corners, equally likely.
  grid = (8, 8)
  _, targets = device_masks(2000, grid, num_targets=1, target_scale=(0.25, 0.25),
                            target_aspect=(1.0, 1.0), min_context=4)
  corners = np.zeros((5, 5))
  for m in targets[:, 0]:
    top, left, h, w = rect(m, grid)
    assert (h, w) == (4, 4)
    corners[top, left] += 1
  freq = corners / corners.sum()
  assert np.abs(freq - 1 / 25).max() < 0.015
  assert targets[:, 0].reshape(-1, 8, 8)[:, -1, :].any()  # the last row and column are used
  assert targets[:, 0].reshape(-1, 8, 8)[:, :, -1].any()


def test_context_redraws_then_falls_back_to_the_image_minus_the_targets():
  grid = (8, 8)
  # Context blocks of 6 patches can never keep 10: every image falls back.
  context, targets = device_masks(50, grid, num_targets=2, context_scale=(0.1, 0.1),
                                  min_context=10)
  np.testing.assert_array_equal(context, ~targets.any(1))
  hc, ht = host_masks(50, grid, num_targets=2, context_scale=(0.1, 0.1), min_context=10)
  np.testing.assert_array_equal(hc, ~ht.any(1))
  # Context blocks of 30-40% (19-25 patches) minus two targets, min_context 16: many draws fail,
  # a later one almost always succeeds.
  kwargs = dict(num_targets=2, target_scale=(0.15, 0.2), context_scale=(0.3, 0.4),
                min_context=16)
  context, targets = device_masks(300, grid, **kwargs)
  check_invariants(context, targets, grid, **kwargs)
  fallback = (context == ~targets.any(1)).all(1)
  assert fallback.mean() < 0.5 and (context.sum(1) >= 16).all()


def test_refuses_what_cannot_guarantee_the_context():
  with pytest.raises(ValueError, match='min_context'):
    masks.ijepa_masks(jax.random.key(0), 2, (4, 4))  # 4 blocks of up to 4 of 16 patches
  with pytest.raises(ValueError, match='min_context'):
    masks_tf.ijepa_masks(tf.constant([0, 0], tf.int64), (4, 4))
  with pytest.raises(ValueError, match='min_context must be >= 1'):
    masks.ijepa_masks(jax.random.key(0), 2, (8, 8), min_context=0)
  with pytest.raises(ValueError, match='target_scale'):
    masks.ijepa_masks(jax.random.key(0), 2, (8, 8), target_scale=(0.3, 0.2))
  with pytest.raises(ValueError, match='num_targets'):
    masks.ijepa_masks(jax.random.key(0), 2, (8, 8), num_targets=0)
  # The largest block of the defaults on 8x8 is 12 patches: 64 - 4 * 12 = 16 >= 10.
  assert masks.ijepa_max_block_area((8, 8), (0.15, 0.2), (0.75, 1.5)) == 12


def test_seeded():
  a = device_masks(8, (8, 8), seed=3)
  b = device_masks(8, (8, 8), seed=3)
  c = device_masks(8, (8, 8), seed=4)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[0], c[0])
  seed = tf.constant([5, 7], tf.int64)
  h1, h2 = masks_tf.ijepa_masks(seed, (8, 8)), masks_tf.ijepa_masks(seed, (8, 8))
  for x, y in zip(h1, h2):
    np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_host_and_device_have_the_same_statistics():
  grid, n = (8, 8), 2000
  dc, dt = device_masks(n, grid)
  hc, ht = host_masks(n, grid)
  # Mean counts: context patches, target patches, patches under some target.
  for d, h in ((dc.sum(1), hc.sum(1)), (dt.sum(-1), ht.sum(-1)), (dt.any(1).sum(1),
                                                                  ht.any(1).sum(1))):
    assert abs(d.mean() - h.mean()) < 0.03 * d.mean() + 0.2, (d.mean(), h.mean())
  # Per-position frequencies of context and target patches.
  np.testing.assert_allclose(dc.mean(0), hc.mean(0), atol=0.06)
  np.testing.assert_allclose(dt.mean((0, 1)), ht.mean((0, 1)), atol=0.04)
  # The distribution of target block shapes.
  def shapes(t):
    out = {}
    for m in t.reshape(-1, grid[0] * grid[1]):
      key = rect(m, grid)[2:]
      out[key] = out.get(key, 0) + 1 / (t.shape[0] * t.shape[1])
    return out
  sd, sh = shapes(dt), shapes(ht)
  assert 0.5 * sum(abs(sd.get(k, 0) - sh.get(k, 0)) for k in set(sd) | set(sh)) < 0.04
