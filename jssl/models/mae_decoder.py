"""MAE's lightweight decoder (He et al., 2022): encoder tokens of the visible patches -> pixels.

`MAEDecoder(...)(tokens, ids_restore, grid, train)`: `tokens [N, 1 + L_keep, D_enc]` (CLS first
when `class_token`) -> `pred [N, L, p*p*C]` for every patch, in the row-major order of
`losses.patchify`:
  linear embed to `width` -> append `L - L_keep` copies of a learned mask token and unshuffle
  them with `ids_restore` -> add fixed 2-D sin-cos position embeddings (zero for CLS) ->
  `depth` pre-norm ViT blocks -> LayerNorm -> linear to p*p*C -> drop CLS.
Init as MAE: Dense xavier_uniform, biases zero, mask token normal(0.02). `remat=True`
recomputes each block in the backward pass (jssl.models.remat), as the encoder's.
MAE's ImageNet decoder: width 512, depth 8, 16 heads.
"""

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from jssl.models import remat as remat_lib
from jssl.models.pos_embed import sincos_2d
from jssl.models.vit import Block, dense_init, token_init


class MAEDecoder(nn.Module):
  """MAE decoder; the fields mirror MAE's `decoder_embed_dim / depth / num_heads`."""
  width: int = 512
  depth: int = 8
  num_heads: int = 16
  patch_size: int = 16
  out_channels: int = 3
  mlp_ratio: float = 4.0
  class_token: bool = True
  dtype: Any = jnp.float32
  attention_impl: Optional[str] = None
  remat: bool = False

  @nn.compact
  def __call__(self, tokens, ids_restore, grid: Tuple[int, int], train: bool = True):
    del train  # no dropout / drop path in MAE's decoder
    gh, gw = grid
    n, num = jnp.shape(ids_restore)
    if num != gh * gw:
      raise ValueError(f'MAEDecoder: ids_restore has {num} patches, grid {grid} has {gh * gw}')
    x = nn.Dense(self.width, kernel_init=dense_init, dtype=self.dtype, name='embed')(tokens)
    prefix = 1 if self.class_token else 0
    visible = x[:, prefix:]
    mask_token = self.param('mask_token', token_init, (1, 1, self.width), jnp.float32)
    fill = jnp.broadcast_to(jnp.asarray(mask_token, x.dtype),
                            (n, num - visible.shape[1], self.width))
    x_ = jnp.concatenate([visible, fill], axis=1)
    x_ = jnp.take_along_axis(x_, jnp.asarray(ids_restore)[..., None], axis=1)  # unshuffle
    x = jnp.concatenate([x[:, :prefix], x_], axis=1)
    x = x + jnp.asarray(sincos_2d(self.width, gh, gw, cls_token=self.class_token), x.dtype)
    args = (self.num_heads, self.mlp_ratio, 0.0, None, self.dtype, self.attention_impl)
    for i in range(self.depth):
      x = remat_lib.block_call(self.remat, Block, args, f'block{i}', x, True)
    x = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name='norm')(x)
    p = self.patch_size
    x = nn.Dense(p * p * self.out_channels, kernel_init=dense_init, dtype=self.dtype,
                 name='pred')(x)
    return x[:, prefix:]
