"""Patch masks for masked image modeling, in JAX (jit- and vmap-friendly; no TensorFlow).

Convention: 1 = masked (hidden from the encoder / to be predicted), 0 = visible.
- `mae_random_masking`: MAE's per-sample shuffle (He et al., 2022), made on the device.
- `simmim_mask`: SimMIM's random mask on a coarse grid, upsampled to the patch grid
  (Xie et al., 2022; their `MaskGenerator`).
- `beit_mask`: BEiT's block-wise mask (Bao et al., 2022; their `MaskingGenerator`).
All three take a batch size and return a batch.
The host (tf.data) versions with the same algorithms are in `masks_tf`.
"""

import math
from typing import Optional, Tuple

import jax
import jax.numpy as jnp

# How many block attempts in a row may fail before BEiT's generator gives up (its `range(10)`).
BEIT_ATTEMPTS = 10


def mae_keep_count(num_patches: int, mask_ratio: float) -> int:
  """MAE's `int(L * (1 - mask_ratio))`, immune to float noise (10 * (1 - 0.9) -> 1, not 0)."""
  return int(num_patches * (1 - mask_ratio) + 1e-6)


def simmim_mask_count(num_mask_patches: int, mask_ratio: float) -> int:
  """SimMIM's `ceil(n * mask_ratio)`, immune to float noise (100 * 0.07 -> 7, not 8)."""
  return math.ceil(num_mask_patches * mask_ratio - 1e-6)


def mae_random_masking(rng: jax.Array, batch_size: int, num_patches: int,
                       mask_ratio: float = 0.75):
  """MAE's random masking: a uniformly random subset of `mae_keep_count(L, ratio)` kept patches.

  Args:
    rng: a JAX PRNG key.
    batch_size, num_patches: B and L (static).
    mask_ratio: fraction of the L patches to mask.

  Returns:
    ids_keep: int32 [B, L_keep], indices of the kept patches (in shuffled order);
      `x_kept = take_along_axis(x, ids_keep[..., None], axis=1)`.
    ids_restore: int32 [B, L]; `take_along_axis(concat([x_kept, mask_tokens]), ids_restore)`
      puts the tokens back in their original order.
    mask: float32 [B, L], 1 = masked, 0 = kept, in the original patch order.
  """
  keep = mae_keep_count(num_patches, mask_ratio)
  noise = jax.random.uniform(rng, (batch_size, num_patches))
  ids_shuffle = jnp.argsort(noise, axis=1).astype(jnp.int32)
  ids_restore = jnp.argsort(ids_shuffle, axis=1).astype(jnp.int32)
  mask = (ids_restore >= keep).astype(jnp.float32)
  return ids_shuffle[:, :keep], ids_restore, mask


def simmim_mask(rng: jax.Array, batch_size: int, input_size: int = 224,
                mask_patch_size: int = 32, model_patch_size: int = 16,
                mask_ratio: float = 0.6) -> jax.Array:
  """SimMIM's mask: `ceil(ratio * n)` of the n mask patches, chosen uniformly, then upsampled.

  The image is cut into `(input_size / mask_patch_size)^2` mask patches; exactly
  `simmim_mask_count(n, mask_ratio)` are masked and each covers
  `(mask_patch_size / model_patch_size)^2` model patches.

  Returns:
    int32 [B, input_size / model_patch_size, input_size / model_patch_size], 1 = masked.
  """
  rand_size = input_size // mask_patch_size
  scale = mask_patch_size // model_patch_size
  n = rand_size * rand_size
  count = simmim_mask_count(n, mask_ratio)
  noise = jax.random.uniform(rng, (batch_size, n))
  rank = jnp.argsort(jnp.argsort(noise, axis=1), axis=1)
  mask = (rank < count).astype(jnp.int32).reshape(batch_size, rand_size, rand_size)
  return jnp.repeat(jnp.repeat(mask, scale, axis=1), scale, axis=2)


def beit_mask(rng: jax.Array, batch_size: int, grid: Tuple[int, int] = (14, 14),
              num_masking_patches: int = 75, min_num_patches: int = 16,
              max_num_patches: Optional[int] = None, min_aspect: float = 0.3,
              max_aspect: Optional[float] = None) -> jax.Array:
  """BEiT's block-wise mask (their `MaskingGenerator`), a batch at a time in a `lax.while_loop`.

  Per example, repeatedly: let `budget = min(target - masked, max_num_patches)`; draw a block
  area uniform in [min_num_patches, budget] (or [budget, min_num_patches] when the budget is
  smaller) and a log-uniform aspect ratio in [min_aspect, max_aspect];
  `h = round(sqrt(area * aspect))`, `w = round(sqrt(area / aspect))`; if `h < rows` and
  `w < cols`, place it uniformly; keep it if it adds between 1 and `budget` new patches. Stop
  when `num_masking_patches` are masked, or after `BEIT_ATTEMPTS` failed draws in a row (BEiT's
  ten tries per round). So the count never exceeds the target and is almost always equal to it
  (about 2/3 of 14x14 masks reach 75 exactly, nearly all the rest 72-74, as with BEiT's code).
  Blocks drawn once the budget is under `min_num_patches` may be smaller than that.

  Args:
    max_num_patches: per-block cap; None or 0: the target. max_aspect: None: 1 / min_aspect.

  Returns:
    int32 [B, rows, cols], 1 = masked.
  """
  rows, cols = grid
  cap = max_num_patches or num_masking_patches
  log_lo = math.log(min_aspect)
  log_hi = math.log(max_aspect if max_aspect else 1 / min_aspect)
  r_idx = jnp.arange(rows)[None, :, None]
  c_idx = jnp.arange(cols)[None, None, :]

  def active(count, fails):
    return (count < num_masking_patches) & (fails < BEIT_ATTEMPTS)

  def body(state):
    step, mask, count, fails = state
    # One draw per example and attempt: area, aspect, top, left.
    u = jax.random.uniform(jax.random.fold_in(rng, step), (batch_size, 4))
    budget = jnp.minimum(num_masking_patches - count, cap).astype(jnp.float32)
    area = min_num_patches + (budget - min_num_patches) * u[:, 0]
    aspect = jnp.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    h = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    w = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    top = jnp.floor(u[:, 2] * (rows - h + 1)).astype(jnp.int32)
    left = jnp.floor(u[:, 3] * (cols - w + 1)).astype(jnp.int32)
    span = lambda v: v[:, None, None]
    block = ((r_idx >= span(top)) & (r_idx < span(top + h)) &
             (c_idx >= span(left)) & (c_idx < span(left + w)))
    new = jnp.sum(block & (mask == 0), axis=(1, 2)).astype(jnp.int32)
    ok = active(count, fails) & (h < rows) & (w < cols) & (new > 0) & (new <= budget)
    mask = jnp.where(span(ok) & block, 1, mask)
    fails = jnp.where(ok, 0, fails + 1)
    return step + 1, mask, count + jnp.where(ok, new, 0), fails

  zeros = jnp.zeros((batch_size,), jnp.int32)
  init = (jnp.int32(0), jnp.zeros((batch_size,) + tuple(grid), jnp.int32), zeros, zeros)
  cond = lambda state: jnp.any(active(state[2], state[3]))
  return jax.lax.while_loop(cond, body, init)[1]
