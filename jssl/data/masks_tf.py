"""Host (tf.data) versions of the SimMIM, BEiT, iBOT and I-JEPA masks: the algorithms of `masks`,
in TF graph ops driven by a stateless seed, so a mask is a pure function of its seed.

They run inside `tf.data.Dataset.map` with no Python callback (no GIL, no numpy_function).
Same convention as `masks`: int32, 1 = masked.
"""

import math
from typing import Optional, Tuple

import tensorflow as tf

from jssl.data import masks


def _uniform(seed, shape=(), minval=0.0, maxval=1.0):
  return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=tf.float32)


def simmim_mask(seed: tf.Tensor, input_size: int = 224, mask_patch_size: int = 32,
                model_patch_size: int = 16, mask_ratio: float = 0.6) -> tf.Tensor:
  """SimMIM's mask for one image from a stateless seed (shape [2]); see `masks.simmim_mask`.

  Returns:
    int32 [input_size / model_patch_size] * 2, exactly `ceil(ratio * n)` mask patches set.
  """
  rand_size = input_size // mask_patch_size
  scale = mask_patch_size // model_patch_size
  n = rand_size * rand_size
  count = masks.simmim_mask_count(n, mask_ratio)
  rank = tf.argsort(tf.argsort(_uniform(seed, [n])))
  mask = tf.reshape(tf.cast(rank < count, tf.int32), [rand_size, rand_size])
  return tf.repeat(tf.repeat(mask, scale, axis=0), scale, axis=1)


def beit_mask(seed: tf.Tensor, grid: Tuple[int, int] = (14, 14),
              num_masking_patches: int = 75, min_num_patches: int = 16,
              max_num_patches: Optional[int] = None, min_aspect: float = 0.3,
              max_aspect: Optional[float] = None) -> tf.Tensor:
  """BEiT's block-wise mask for one image from a stateless seed; see `masks.beit_mask`.

  Returns:
    int32 [rows, cols], at most (and almost always exactly) `num_masking_patches` set.
  """
  return _block_mask(seed, grid, tf.constant(float(num_masking_patches), tf.float32),
                     float(max_num_patches or num_masking_patches), float(min_num_patches),
                     min_aspect, max_aspect)


def _block_mask(seed: tf.Tensor, grid: Tuple[int, int], target: tf.Tensor, cap: float,
                low: float, min_aspect: float, max_aspect: Optional[float]) -> tf.Tensor:
  """BEiT's block loop for one image masking at most `floor(target)` patches; see
  `masks.beit_mask` (`cap`: the per-block area cap, `low`: the smallest block area)."""
  rows, cols = grid
  limit = tf.cast(tf.floor(target), tf.int32)
  log_lo = math.log(min_aspect)
  log_hi = math.log(max_aspect if max_aspect else 1 / min_aspect)
  r_idx = tf.range(rows)[:, None]
  c_idx = tf.range(cols)[None, :]

  def cond(step, mask, count, fails):
    del step, mask
    return (count < limit) & (fails < masks.BEIT_ATTEMPTS)

  def body(step, mask, count, fails):
    # One draw per attempt: area, aspect, top, left.
    u = _uniform(tf.random.experimental.stateless_fold_in(seed, step), [4])
    budget = tf.minimum(target - tf.cast(count, tf.float32), cap)
    area = low + (budget - low) * u[0]
    aspect = tf.exp(log_lo + (log_hi - log_lo) * u[1])
    h = tf.cast(tf.round(tf.sqrt(area * aspect)), tf.int32)
    w = tf.cast(tf.round(tf.sqrt(area / aspect)), tf.int32)
    top = tf.cast(tf.floor(u[2] * tf.cast(rows - h + 1, tf.float32)), tf.int32)
    left = tf.cast(tf.floor(u[3] * tf.cast(cols - w + 1, tf.float32)), tf.int32)
    block = (r_idx >= top) & (r_idx < top + h) & (c_idx >= left) & (c_idx < left + w)
    new = tf.reduce_sum(tf.cast(block & (mask == 0), tf.int32))
    ok = (h < rows) & (w < cols) & (new > 0) & (tf.cast(new, tf.float32) <= budget)
    mask = tf.where(ok & block, 1, mask)
    return step + 1, mask, count + tf.where(ok, new, 0), tf.where(ok, 0, fails + 1)

  init = (tf.constant(0, tf.int32), tf.zeros(grid, tf.int32), tf.constant(0, tf.int32),
          tf.constant(0, tf.int32))
  return tf.while_loop(cond, body, init)[1]


def ijepa_masks(seed: tf.Tensor, grid: Tuple[int, int], *, num_targets: int = 4,
                target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5), context_scale=(0.85, 1.0),
                context_aspect=(1.0, 1.0), min_context: int = 10):
  """I-JEPA's context and target blocks for one image from a stateless seed (shape [2]); the
  algorithm and arguments of `masks.ijepa_masks` (same arguments refused).

  Returns:
    context: bool `[L]`; targets: bool `[num_targets, L]`, disjoint from context.
  """
  ts, ta, cs, ca = masks.ijepa_check(grid, num_targets, target_scale, target_aspect,
                                     context_scale, context_aspect, min_context)
  rows, cols = int(grid[0]), int(grid[1])
  r_idx, c_idx = tf.range(rows)[:, None], tf.range(cols)[None, :]

  def blocks(u, scale, aspect):  # [K, 4] uniforms -> [K, L] bool rectangles
    area = tf.maximum(tf.floor(rows * cols * (scale[0] + (scale[1] - scale[0]) * u[:, 0])), 1.0)
    ratio = aspect[0] + (aspect[1] - aspect[0]) * u[:, 1]
    h = tf.cast(tf.clip_by_value(tf.round(tf.sqrt(area * ratio)), 1, rows), tf.int32)
    w = tf.cast(tf.clip_by_value(tf.round(tf.sqrt(area / ratio)), 1, cols), tf.int32)
    top = tf.minimum(tf.cast(tf.floor(u[:, 2] * tf.cast(rows - h + 1, tf.float32)), tf.int32),
                     rows - h)
    left = tf.minimum(tf.cast(tf.floor(u[:, 3] * tf.cast(cols - w + 1, tf.float32)), tf.int32),
                      cols - w)
    e = lambda v: v[:, None, None]
    block = ((r_idx >= e(top)) & (r_idx < e(top + h)) & (c_idx >= e(left)) &
             (c_idx < e(left + w)))
    return tf.reshape(block, [-1, rows * cols])

  fold = tf.random.experimental.stateless_fold_in
  targets = blocks(_uniform(fold(seed, 0), [num_targets, 4]), ts, ta)
  free = ~tf.reduce_any(targets, axis=0)  # [L]
  draws = blocks(_uniform(fold(seed, 1), [masks.IJEPA_CONTEXT_ATTEMPTS, 4]), cs, ca) & free
  ok = tf.reduce_sum(tf.cast(draws, tf.int32), axis=1) >= min_context  # [A]
  chosen = tf.gather(draws, tf.argmax(tf.cast(ok, tf.int32), output_type=tf.int32))
  context = tf.where(tf.reduce_any(ok), chosen, free)
  return context, targets


def ibot_mask(seed: tf.Tensor, grid: Tuple[int, int] = (14, 14), pred_ratio: float = 0.3,
              pred_ratio_var: float = 0.2, mask_probability: float = 0.5,
              min_num_patches: Optional[int] = None, min_aspect: float = 0.3,
              max_aspect: Optional[float] = None) -> tf.Tensor:
  """iBOT's block-wise mask for one image from a stateless seed; see `masks.ibot_mask` (the same
  prediction-ratio draw and block loop).

  Returns:
    int32 [rows, cols]: all zeros with probability 1 - mask_probability, else at most
    `floor(r * rows * cols)` patches set, r uniform in pred_ratio -/+ pred_ratio_var.
  """
  masks.ibot_check(pred_ratio, pred_ratio_var, mask_probability)
  rows, cols = grid
  ratio_seed, block_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  u = _uniform(ratio_seed, [2])
  ratio = pred_ratio + pred_ratio_var * (2.0 * u[0] - 1.0)
  target = tf.where(u[1] < mask_probability, ratio, 0.0) * float(rows * cols)
  low = float(masks.ibot_min_block(grid) if min_num_patches is None else min_num_patches)
  return _block_mask(block_seed, grid, target, math.inf, low, min_aspect, max_aspect)
