"""Masks for masked image modeling, drawn on the device (JAX only; 1 = masked, 0 = visible).

- `random_masking`: MAE's per-sample shuffle (He et al., 2022): uniform noise per patch, argsort;
  the first `keep_count(L, ratio)` of the shuffled order are kept. Returns `ids_keep [N, L_keep]`
  (gather the visible tokens), `ids_restore [N, L]` (the inverse permutation: unshuffles
  `concat([visible, mask tokens])`) and `mask [N, L]` float32 in the original patch order.
- `upsample_mask`: a patch-grid mask `[N, gh, gw]` -> pixels `[N, gh*p, gw*p]` (SimMIM's
  `repeat_interleave` by the patch size).
"""

import jax
import jax.numpy as jnp


def keep_count(num_patches: int, mask_ratio: float) -> int:
  """MAE's `int(L * (1 - mask_ratio))`, immune to float noise."""
  return int(num_patches * (1 - mask_ratio) + 1e-6)


def random_masking(rng: jax.Array, batch_size: int, num_patches: int, mask_ratio: float = 0.75):
  """`(ids_keep int32 [N, L_keep], ids_restore int32 [N, L], mask float32 [N, L])`."""
  keep = keep_count(num_patches, mask_ratio)
  noise = jax.random.uniform(rng, (batch_size, num_patches))
  ids_shuffle = jnp.argsort(noise, axis=1).astype(jnp.int32)
  ids_restore = jnp.argsort(ids_shuffle, axis=1).astype(jnp.int32)
  mask = (ids_restore >= keep).astype(jnp.float32)
  return ids_shuffle[:, :keep], ids_restore, mask


def upsample_mask(mask: jax.Array, patch: int) -> jax.Array:
  """`[N, gh, gw] -> [N, gh * patch, gw * patch]`, each grid cell repeated patch x patch."""
  return jnp.repeat(jnp.repeat(mask, patch, axis=1), patch, axis=2)
