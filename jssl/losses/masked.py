"""Masked image modeling: patchify / unpatchify and the MAE, SimMIM and BEiT losses."""

import jax
import jax.numpy as jnp

from jssl.losses import _common as c


def patchify(images: jax.Array, patch: int) -> jax.Array:
  """`[N, H, W, C] -> [N, (H/p)(W/p), p*p*C]`: row-major patches, each flattened as (py, px, c)."""
  c.assert_rank('images', images, 4)
  n, h, w, ch = jnp.shape(images)
  if h % patch or w % patch:
    raise ValueError(f'images {jnp.shape(images)}: H and W must divide by patch={patch}')
  x = jnp.reshape(images, (n, h // patch, patch, w // patch, patch, ch))
  x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
  return jnp.reshape(x, (n, (h // patch) * (w // patch), patch * patch * ch))


def unpatchify(patches: jax.Array, patch: int, height: int, width: int) -> jax.Array:
  """Inverse of `patchify`: `[N, L, p*p*C] -> [N, H, W, C]` for an image of height x width."""
  c.assert_rank('patches', patches, 3)
  n, l, pp = jnp.shape(patches)
  gh, gw = height // patch, width // patch
  if gh * patch != height or gw * patch != width:
    raise ValueError(f'height={height} and width={width} must divide by patch={patch}')
  if gh * gw != l or pp % (patch * patch):
    raise ValueError(f'patches {jnp.shape(patches)} do not tile a {height}x{width} image with '
                     f'patch={patch}: expected [N, {gh * gw}, patch*patch*C]')
  ch = pp // (patch * patch)
  x = jnp.reshape(patches, (n, gh, gw, patch, patch, ch))
  x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
  return jnp.reshape(x, (n, height, width, ch))


def mae_loss(pred: jax.Array, target: jax.Array, mask: jax.Array, *,
             norm_pix_loss: bool = True) -> jax.Array:
  """MAE's reconstruction loss on masked patches (He et al., 2022).

  With `norm_pix_loss` each target patch becomes `(t - mean) / sqrt(var_unbiased + 1e-6)` over its
  P values; `per_patch = mean_P (pred - target)^2`; `loss = sum(per_patch * mask) / sum(mask)`.

  Args:
    pred, target: `[N, L, P]` (target from `patchify`); mask: `[N, L]`, 1 where masked.
  """
  c.assert_rank('pred', pred, 3)
  c.assert_same_shape('pred and target', pred, target)
  c.assert_rank('mask', mask, 2)
  if jnp.shape(mask) != jnp.shape(pred)[:2]:
    raise ValueError(f'mask must be [N, L] = {jnp.shape(pred)[:2]}, got {jnp.shape(mask)}')
  t = c.f32(target)
  if norm_pix_loss:
    # Centred about the patch's first value before the mean is taken: the same numbers, but a
    # (near-)constant patch centres to (near-)exact zeros instead of the float32 rounding error of
    # its mean, which the division by sqrt(0 + 1e-6) would blow up a thousandfold.
    t = t - jax.lax.stop_gradient(t[..., :1])
    t = t - jnp.mean(t, axis=-1, keepdims=True)
    var = jnp.sum(t * t, axis=-1, keepdims=True) / (jnp.shape(t)[-1] - 1)
    t = t / jnp.sqrt(var + 1e-6)
  per_patch = jnp.mean((c.f32(pred) - t) ** 2, axis=-1)
  m = c.f32(mask)
  return jnp.sum(per_patch * m) / jnp.sum(m)


def simmim_loss(pred: jax.Array, target: jax.Array, mask: jax.Array) -> jax.Array:
  """SimMIM's L1 loss on masked pixels (Xie et al., 2022).

  `loss = sum(|pred - target| * mask[..., None]) / (sum(mask) + 1e-5) / C`.

  Args:
    pred, target: `[N, H, W, C]` images; mask: `[N, H, W]` at pixel resolution, 1 where masked.
  """
  c.assert_rank('pred', pred, 4)
  c.assert_same_shape('pred and target', pred, target)
  c.assert_rank('mask', mask, 3)
  if jnp.shape(mask) != jnp.shape(pred)[:3]:
    raise ValueError(f'mask must be [N, H, W] = {jnp.shape(pred)[:3]}, got {jnp.shape(mask)}')
  m = c.f32(mask)
  l1 = jnp.abs(c.f32(pred) - c.f32(target)) * m[..., None]
  return jnp.sum(l1) / (jnp.sum(m) + 1e-5) / jnp.shape(pred)[-1]


def beit_loss(logits: jax.Array, tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """BEiT's masked visual-token prediction (Bao et al., 2022).

  `loss = sum_{masked (n, l)} -log_softmax(logits[n, l])[tokens[n, l]] / number of masked`.

  Args:
    logits: `[N, L, V]`; tokens: `[N, L]` int visual-token ids in [0, V); mask: `[N, L]`, 1 where
    masked.
  """
  c.assert_rank('logits', logits, 3)
  c.assert_rank('tokens', tokens, 2)
  c.assert_rank('mask', mask, 2)
  for name, x in (('tokens', tokens), ('mask', mask)):
    if jnp.shape(x) != jnp.shape(logits)[:2]:
      raise ValueError(f'{name} must be [N, L] = {jnp.shape(logits)[:2]} (the leading axes of '
                       f'logits), got {jnp.shape(x)}')
  if not jnp.issubdtype(jnp.result_type(tokens), jnp.integer):
    raise TypeError(f'tokens must be integer ids, got dtype {jnp.result_type(tokens)}')
  log_p = jax.nn.log_softmax(c.f32(logits), axis=-1)
  nll = -jnp.take_along_axis(log_p, tokens[..., None].astype(jnp.int32), axis=-1)[..., 0]
  m = c.f32(mask)
  return jnp.sum(nll * m) / jnp.sum(m)
