"""Patch masks for masked image modeling, in JAX (jit- and vmap-friendly; no TensorFlow).

Convention: 1 = masked (hidden from the encoder / to be predicted), 0 = visible.
- `mae_random_masking`: MAE's per-sample shuffle (He et al., 2022), made on the device.
- `simmim_mask`: SimMIM's random mask on a coarse grid, upsampled to the patch grid
  (Xie et al., 2022; their `MaskGenerator`).
- `beit_mask`: BEiT's block-wise mask (Bao et al., 2022; their `MaskingGenerator`).
- `ibot_mask`: iBOT's block-wise masks with a per-image prediction ratio (Zhou et al., 2022).
- `ijepa_masks`: I-JEPA's context block and target blocks (Assran et al., 2023), and
  `ijepa_indices`, their patches as fixed-length index lists for gathering.
All but `ijepa_indices` take a batch size and return a batch.
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
  target = jnp.full((batch_size,), float(num_masking_patches), jnp.float32)
  return _block_masks(rng, grid, target, float(max_num_patches or num_masking_patches),
                      float(min_num_patches), min_aspect, max_aspect)


def _block_masks(rng: jax.Array, grid: Tuple[int, int], target: jax.Array, cap: float,
                 low: float, min_aspect: float, max_aspect: Optional[float]) -> jax.Array:
  """BEiT's block loop for a batch, image b masking at most `floor(target[b])` patches (see
  `beit_mask`; `cap`: the per-block area cap, `low`: the smallest block area). int32 [B, r, c]."""
  rows, cols = grid
  batch_size = target.shape[0]
  log_lo = math.log(min_aspect)
  log_hi = math.log(max_aspect if max_aspect else 1 / min_aspect)
  r_idx = jnp.arange(rows)[None, :, None]
  c_idx = jnp.arange(cols)[None, None, :]
  limit = jnp.floor(target).astype(jnp.int32)

  def active(count, fails):
    return (count < limit) & (fails < BEIT_ATTEMPTS)

  def body(state):
    step, mask, count, fails = state
    # One draw per example and attempt: area, aspect, top, left.
    u = jax.random.uniform(jax.random.fold_in(rng, step), (batch_size, 4))
    budget = jnp.minimum(target - count.astype(jnp.float32), cap)
    area = low + (budget - low) * u[:, 0]
    aspect = jnp.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    h = jnp.round(jnp.sqrt(area * aspect)).astype(jnp.int32)
    w = jnp.round(jnp.sqrt(area / aspect)).astype(jnp.int32)
    top = jnp.floor(u[:, 2] * (rows - h + 1)).astype(jnp.int32)
    left = jnp.floor(u[:, 3] * (cols - w + 1)).astype(jnp.int32)
    span = lambda v: v[:, None, None]
    block = ((r_idx >= span(top)) & (r_idx < span(top + h)) &
             (c_idx >= span(left)) & (c_idx < span(left + w)))
    new = jnp.sum(block & (mask == 0), axis=(1, 2)).astype(jnp.int32)
    ok = (active(count, fails) & (h < rows) & (w < cols) & (new > 0) &
          (new.astype(jnp.float32) <= budget))
    mask = jnp.where(span(ok) & block, 1, mask)
    fails = jnp.where(ok, 0, fails + 1)
    return step + 1, mask, count + jnp.where(ok, new, 0), fails

  zeros = jnp.zeros((batch_size,), jnp.int32)
  init = (jnp.int32(0), jnp.zeros((batch_size,) + tuple(grid), jnp.int32), zeros, zeros)
  cond = lambda state: jnp.any(active(state[2], state[3]))
  return jax.lax.while_loop(cond, body, init)[1]


# ---------------------------------------------------------------------------------------- I-JEPA
# I-JEPA's multi-block masks (Assran et al., 2023). Per image, independently:
# - `num_targets` target blocks: an area of `floor(L * s)` patches (at least 1) with s uniform in
#   `target_scale`, an aspect ratio r = height / width uniform (not log-uniform, as I-JEPA's
#   code) in `target_aspect`, `h = round(sqrt(area * r))`, `w = round(sqrt(area / r))` (clipped to
#   the grid), the rectangle placed uniformly among all positions where it fits. Targets may
#   overlap one another.
# - one context block drawn the same way from `context_scale` / `context_aspect`, minus every
#   target patch. If that leaves fewer than `min_context` patches, the context block is redrawn
#   (size and place), up to IJEPA_CONTEXT_ATTEMPTS draws; if none keeps `min_context`, the context
#   is the whole image minus the targets. The arguments are refused (ValueError) unless even the
#   largest possible targets leave `min_context` patches outside them, so every context holds at
#   least `min_context` patches and never a target patch.
# Differences from I-JEPA's collator, which draws one block size per batch (its sequences must
# have one length) and cuts every mask to the batch's smallest count, keeping its first patches in
# raster order: here sizes are per image and the masks are [B, L] booleans; `ijepa_indices` turns
# them into fixed-length index lists, cutting a context only when it has more patches than the
# list holds, and then to a uniformly random subset. Scale and aspect are two independent
# uniforms (the collator reuses one for both); a block may touch the last row and column, and the
# context block may cover the whole grid.

# Context draws per image before the fallback to the whole image minus the targets.
IJEPA_CONTEXT_ATTEMPTS = 20


def _ijepa_range(name: str, value, upper=None) -> Tuple[float, float]:
  lo, hi = (float(v) for v in value)
  if not 0 < lo <= hi or (upper is not None and hi > upper):
    raise ValueError(f'ijepa_masks: {name} must be (lo, hi) with 0 < lo <= hi'
                     f'{f" <= {upper}" if upper is not None else ""}, got {tuple(value)}')
  return lo, hi


def _ijepa_hw(area: int, ratio: float, rows: int, cols: int) -> Tuple[int, int]:
  return (min(max(round(math.sqrt(area * ratio)), 1), rows),
          min(max(round(math.sqrt(area / ratio)), 1), cols))


def ijepa_block_hw(grid: Tuple[int, int], scale: Tuple[float, float],
                   aspect: Tuple[float, float], u_scale: float, u_aspect: float) -> Tuple[int, int]:
  """The `(h, w)` of a block for uniforms `u_scale`, `u_aspect` in [0, 1) (the rule above, in
  Python floats)."""
  rows, cols = grid
  area = max(math.floor(rows * cols * (scale[0] + (scale[1] - scale[0]) * u_scale)), 1)
  return _ijepa_hw(area, aspect[0] + (aspect[1] - aspect[0]) * u_aspect, rows, cols)


def ijepa_max_block_area(grid: Tuple[int, int], scale: Tuple[float, float],
                         aspect: Tuple[float, float]) -> int:
  """The largest `h * w` a block of `scale` / `aspect` can have on `grid`: for every area, h and
  w are step functions of the ratio, evaluated at the range's ends, at every step and between
  steps (so float32 rounding at a step is covered either way)."""
  rows, cols = grid
  best = 0
  for area in range(max(math.floor(rows * cols * scale[0]), 1),
                    max(math.floor(rows * cols * scale[1] + 1e-6), 1) + 1):
    points = {aspect[0], aspect[1]}
    for k in range(rows + cols + 1):  # where sqrt(area * r) or sqrt(area / r) is k + 1/2
      points.update(r for r in ((k + 0.5)**2 / area, area / (k + 0.5)**2)
                    if aspect[0] < r < aspect[1])
    points = sorted(points)
    points += [(a + b) / 2 for a, b in zip(points, points[1:])]
    best = max(best, max(h * w for h, w in (_ijepa_hw(area, r, rows, cols) for r in points)))
  return best


def ijepa_check(grid: Tuple[int, int], num_targets: int, target_scale, target_aspect,
                context_scale, context_aspect, min_context: int) -> tuple:
  """Validates the arguments of `ijepa_masks` (both versions); returns the four ranges."""
  rows, cols = (int(g) for g in grid)
  if rows < 1 or cols < 1:
    raise ValueError(f'ijepa_masks: grid must be positive, got {tuple(grid)}')
  if int(num_targets) < 1:
    raise ValueError(f'ijepa_masks: num_targets must be >= 1, got {num_targets}')
  if int(min_context) < 1:
    raise ValueError(f'ijepa_masks: min_context must be >= 1, got {min_context}')
  ranges = (_ijepa_range('target_scale', target_scale, 1.0),
            _ijepa_range('target_aspect', target_aspect),
            _ijepa_range('context_scale', context_scale, 1.0),
            _ijepa_range('context_aspect', context_aspect))
  largest = ijepa_max_block_area((rows, cols), ranges[0], ranges[1])
  if rows * cols - num_targets * largest < min_context:
    raise ValueError(
        f'ijepa_masks: {num_targets} target blocks of up to {largest} patches may cover all but '
        f'{max(rows * cols - num_targets * largest, 0)} of the {rows}x{cols} grid, fewer than '
        f'min_context={min_context}: lower num_targets, target_scale or min_context')
  return ranges


def _ijepa_blocks(u: jax.Array, grid: Tuple[int, int], scale, aspect) -> jax.Array:
  """Uniforms `[..., 4]` (scale, aspect, top, left) -> rectangles `[..., L]` bool."""
  rows, cols = grid
  area = jnp.maximum(jnp.floor(rows * cols * (scale[0] + (scale[1] - scale[0]) * u[..., 0])), 1)
  ratio = aspect[0] + (aspect[1] - aspect[0]) * u[..., 1]
  h = jnp.clip(jnp.round(jnp.sqrt(area * ratio)), 1, rows).astype(jnp.int32)
  w = jnp.clip(jnp.round(jnp.sqrt(area / ratio)), 1, cols).astype(jnp.int32)
  top = jnp.minimum(jnp.floor(u[..., 2] * (rows - h + 1)).astype(jnp.int32), rows - h)
  left = jnp.minimum(jnp.floor(u[..., 3] * (cols - w + 1)).astype(jnp.int32), cols - w)
  r_idx, c_idx = jnp.arange(rows)[:, None], jnp.arange(cols)[None, :]
  e = lambda v: v[..., None, None]
  block = ((r_idx >= e(top)) & (r_idx < e(top + h)) & (c_idx >= e(left)) & (c_idx < e(left + w)))
  return jnp.reshape(block, u.shape[:-1] + (rows * cols,))


def ijepa_masks(rng: jax.Array, batch_size: int, grid: Tuple[int, int], *, num_targets: int = 4,
                target_scale=(0.15, 0.2), target_aspect=(0.75, 1.5), context_scale=(0.85, 1.0),
                context_aspect=(1.0, 1.0), min_context: int = 10):
  """I-JEPA's context and target blocks for a batch (the algorithm in the comment above).

  Args:
    rng: a JAX PRNG key; batch_size: B; grid: `(rows, cols)` of the patch grid (L = rows * cols).
    num_targets: target blocks per image; target_scale / context_scale: area fractions of the
      grid; target_aspect / context_aspect: height / width ranges; min_context: the fewest
      context patches an image may get.

  Returns:
    context: bool `[B, L]`, True on the context patches (the encoder's `token_mask`);
    targets: bool `[B, num_targets, L]`, True on each target block's patches; disjoint from
      context. Patches in row-major order (`losses.patchify`'s).
  """
  ts, ta, cs, ca = ijepa_check(grid, num_targets, target_scale, target_aspect, context_scale,
                               context_aspect, min_context)
  grid = (int(grid[0]), int(grid[1]))
  t_rng, c_rng = jax.random.split(rng)
  targets = _ijepa_blocks(jax.random.uniform(t_rng, (batch_size, num_targets, 4)), grid, ts, ta)
  free = ~jnp.any(targets, axis=1)  # [B, L]
  draws = _ijepa_blocks(jax.random.uniform(c_rng, (batch_size, IJEPA_CONTEXT_ATTEMPTS, 4)), grid,
                        cs, ca) & free[:, None]
  ok = jnp.sum(draws, axis=-1) >= min_context  # [B, A]
  first = jnp.argmax(ok, axis=1)  # the first draw that keeps enough (0 when none does)
  chosen = jnp.take_along_axis(draws, first[:, None, None], axis=1)[:, 0]
  context = jnp.where(jnp.any(ok, axis=1)[:, None], chosen, free)
  return context, targets


def ijepa_indices(rng: jax.Array, context: jax.Array, targets: jax.Array, context_tokens: int,
                  target_tokens: int):
  """I-JEPA's masks as fixed-length patch index lists, for gathering (static shapes under jit).

  Args:
    rng: a JAX PRNG key (which context patches to keep when an image has too many).
    context: bool `[B, L]`; targets: bool `[B, T, L]` (`ijepa_masks`).
    context_tokens: K, the context slots per image: an image with more than K context patches
      keeps a uniformly random K of them; one with fewer is padded.
    target_tokens: M, the slots per target block: at least the largest block's area
      (`ijepa_max_block_area`), so every target patch gets a slot.

  Returns:
    context_ids `[B, K]` int32 and context_valid `[B, K]` bool: the kept context patches in raster
    order, the padding slots (other patches) marked False; target_ids `[B, T, M]` int32 and
    target_valid `[B, T, M]` bool: each block's patches in raster order, then padding.
  """
  num = jnp.shape(context)[-1]
  if not 1 <= context_tokens <= num or not 1 <= target_tokens <= num:
    raise ValueError(f'ijepa_indices: context_tokens and target_tokens must be in [1, L={num}], '
                     f'got {context_tokens} and {target_tokens}')
  context = jnp.asarray(context, bool)
  targets = jnp.asarray(targets, bool)
  order = jnp.arange(num, dtype=jnp.int32)
  # Context patches first, in a random order (a uniform random subset survives the cut), then the
  # others; the kept slots are then put back in raster order.
  key = jnp.where(context, jax.random.uniform(rng, context.shape), 1.0 + order / num)
  context_ids = jnp.sort(jnp.argsort(key, axis=-1)[:, :context_tokens], axis=-1)
  context_valid = jnp.take_along_axis(context, context_ids, axis=-1)
  target_ids = jnp.argsort(jnp.where(targets, 0, num) + order, axis=-1)[..., :target_tokens]
  target_valid = jnp.take_along_axis(targets, target_ids, axis=-1)
  return (context_ids.astype(jnp.int32), context_valid, target_ids.astype(jnp.int32),
          target_valid)


# ------------------------------------------------------------------------------------------ iBOT


def ibot_check(pred_ratio: float, pred_ratio_var: float, mask_probability: float) -> None:
  """Raises ValueError unless 0 <= var <= ratio, ratio + var <= 1 and 0 <= probability <= 1."""
  if not 0.0 <= pred_ratio_var <= pred_ratio or pred_ratio + pred_ratio_var > 1.0:
    raise ValueError(f'iBOT masks need 0 <= pred_ratio_var <= pred_ratio and pred_ratio + '
                     f'pred_ratio_var <= 1, got pred_ratio={pred_ratio}, '
                     f'pred_ratio_var={pred_ratio_var}')
  if not 0.0 <= mask_probability <= 1.0:
    raise ValueError(f'iBOT masks need mask_probability in [0, 1], got {mask_probability}')


def ibot_min_block(grid: Tuple[int, int]) -> int:
  """iBOT's smallest block area: `(min(rows, cols) // 3) ** 2` (16 on 14 x 14, 4 on 8 x 8)."""
  return max((min(grid) // 3) ** 2, 1)


def ibot_pred_ratios(rng: jax.Array, batch_size: int, pred_ratio: float = 0.3,
                     pred_ratio_var: float = 0.2, mask_probability: float = 0.5) -> jax.Array:
  """Per-image prediction ratios, float32 `[B]`: with probability `mask_probability` uniform in
  `[pred_ratio - pred_ratio_var, pred_ratio + pred_ratio_var]`, otherwise 0 (no mask)."""
  ibot_check(pred_ratio, pred_ratio_var, mask_probability)
  u_ratio, u_on = jax.random.split(rng)
  r = pred_ratio + pred_ratio_var * (2.0 * jax.random.uniform(u_ratio, (batch_size,)) - 1.0)
  on = jax.random.uniform(u_on, (batch_size,)) < mask_probability
  return jnp.where(on, r, 0.0).astype(jnp.float32)


def ibot_mask(rng: jax.Array, batch_size: int, grid: Tuple[int, int] = (14, 14),
              pred_ratio: float = 0.3, pred_ratio_var: float = 0.2,
              mask_probability: float = 0.5, min_num_patches: Optional[int] = None,
              min_aspect: float = 0.3, max_aspect: Optional[float] = None) -> jax.Array:
  """iBOT's block-wise masks (Zhou et al., 2022), each image with its own prediction ratio.

  Image b gets `r_b = ibot_pred_ratios(...)` and the budget `t_b = r_b * rows * cols` patches
  (a float, as iBOT's `pred_ratio * H * W`). Then BEiT's block loop (`beit_mask`), per image:
  draw a block area uniform between `min_num_patches` and the remaining budget `t_b - masked`,
  a log-uniform aspect in [min_aspect, max_aspect], round its sides, place it uniformly when it
  fits (sides < rows, cols), keep it if it adds between 1 and the remaining budget of new
  patches; stop when no budget is left or after `BEIT_ATTEMPTS` failed draws in a row. So an
  image masks at most `floor(t_b)` patches and nearly always close to it; `r_b = 0` leaves it
  unmasked. There is no per-block cap (iBOT has none).

  iBOT's ViT recipes (`--pred_ratio 0 0.3 --pred_ratio_var 0 0.2`) are mask_probability 0.5,
  pred_ratio 0.3, pred_ratio_var 0.2: half the images unmasked, the others r ~ U[0.1, 0.5].

  Args:
    min_num_patches: smallest block area; None: iBOT's `ibot_min_block(grid)`.
    max_aspect: None: 1 / min_aspect.

  Returns:
    int32 [B, rows, cols], 1 = masked.
  """
  rows, cols = grid
  ratio_rng, block_rng = jax.random.split(rng)
  target = ibot_pred_ratios(ratio_rng, batch_size, pred_ratio, pred_ratio_var,
                            mask_probability) * float(rows * cols)
  low = float(ibot_min_block(grid) if min_num_patches is None else min_num_patches)
  return _block_masks(block_rng, grid, target, math.inf, low, min_aspect, max_aspect)
