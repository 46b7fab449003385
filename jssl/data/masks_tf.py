"""Host (tf.data) versions of the SimMIM and BEiT masks: the algorithms of `masks`, in TF graph
ops driven by a stateless seed, so a mask is a pure function of its seed.

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
  rows, cols = grid
  cap = max_num_patches or num_masking_patches
  log_lo = math.log(min_aspect)
  log_hi = math.log(max_aspect if max_aspect else 1 / min_aspect)
  r_idx = tf.range(rows)[:, None]
  c_idx = tf.range(cols)[None, :]

  def cond(step, mask, count, fails):
    del step, mask
    return (count < num_masking_patches) & (fails < masks.BEIT_ATTEMPTS)

  def body(step, mask, count, fails):
    # One draw per attempt: area, aspect, top, left.
    u = _uniform(tf.random.experimental.stateless_fold_in(seed, step), [4])
    budget = tf.cast(tf.minimum(num_masking_patches - count, cap), tf.float32)
    area = min_num_patches + (budget - min_num_patches) * u[0]
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
