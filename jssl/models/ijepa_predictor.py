"""I-JEPA's predictor (Assran et al., 2023): a narrow ViT from the context to each target block.

`IJEPAPredictor(...)(tokens, context, targets, grid, train) -> [N, T, L, out_width]`:
- `tokens [N, L, D_enc]`: the context encoder's patch outputs over the whole grid (row-major;
  only the context positions are read), `context [N, L]` bool, `targets [N, T, L]` bool
  (`jssl.data.masks.ijepa_masks`), `grid = (rows, cols)` with L = rows * cols.
- The context encodings are embedded linearly to `width` and given the fixed 2-D sin-cos
  position embedding of their patch; each target position gets a learned mask token plus its
  position embedding.
- For each (image, target block) one sequence of L slots: slot p holds the mask token of p when
  p is in the block, else the embedded context encoding of p (slots in neither are never
  attended to). The N * T sequences (image-major: row `i * T + j` is image i, block j) go through
  `depth` pre-norm ViT blocks whose attention keys are only the slots of `context | targets[j]`,
  so a block's predictions depend on the context and on that block's positions alone, never on
  the other blocks (what I-JEPA's predictor sees: the context tokens and one block's mask
  tokens). Then a LayerNorm and a linear map back to `out_width` (the encoder's width).
- The output at a slot of target block j is the prediction of the target encoder's token there;
  the other slots hold values to ignore (the loss masks them out).
Static shapes: every sequence has L slots whatever the block and context sizes (the attention
mask does what I-JEPA's variable-length gather does). Init as the ViT: Dense xavier_uniform,
biases zero, mask token normal(0.02). I-JEPA's ViT-H/14 predictor: width 384, depth 12, 12 heads.
"""

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from jssl.models.pos_embed import sincos_2d
from jssl.models.vit import Block, dense_init, token_init


class IJEPAPredictor(nn.Module):
  """The predictor; `out_width` is the encoder's width."""
  width: int = 384
  depth: int = 12
  num_heads: int = 12
  out_width: int = 768
  mlp_ratio: float = 4.0
  dtype: Any = jnp.float32
  attention_impl: Optional[str] = None

  @nn.compact
  def __call__(self, tokens, context, targets, grid: Tuple[int, int], train: bool = True):
    del train  # no dropout / drop path in I-JEPA's predictor
    rows, cols = grid
    n, num = jnp.shape(tokens)[:2]
    if num != rows * cols:
      raise ValueError(f'IJEPAPredictor: tokens have {num} patches, grid {grid} has {rows * cols}')
    if jnp.shape(context) != (n, num):
      raise ValueError(f'IJEPAPredictor: context must be [N, L] = {(n, num)}, got '
                       f'{jnp.shape(context)}')
    if jnp.ndim(targets) != 3 or jnp.shape(targets)[0] != n or jnp.shape(targets)[2] != num:
      raise ValueError(f'IJEPAPredictor: targets must be [N, T, L] with N={n}, L={num}, got '
                       f'{jnp.shape(targets)}')
    t = jnp.shape(targets)[1]
    context = jnp.asarray(context, bool)
    targets = jnp.asarray(targets, bool)
    pos = jnp.asarray(sincos_2d(self.width, rows, cols), self.dtype)  # [L, W]
    x = nn.Dense(self.width, kernel_init=dense_init, dtype=self.dtype, name='embed')(tokens) + pos
    mask_token = self.param('mask_token', token_init, (1, 1, self.width), jnp.float32)
    queries = jnp.asarray(mask_token, self.dtype) + pos  # [1, L, W]
    seq = jnp.where(targets[..., None], queries[:, None], x[:, None])  # [N, T, L, W]
    seq = jnp.reshape(seq, (n * t, num, self.width))
    keys = jnp.reshape(context[:, None] | targets, (n * t, num))
    for i in range(self.depth):
      seq = Block(self.num_heads, self.mlp_ratio, 0.0, None, self.dtype, self.attention_impl,
                  name=f'block{i}')(seq, True, keys)
    seq = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name='norm')(seq)
    out = nn.Dense(self.out_width, kernel_init=dense_init, dtype=self.dtype, name='proj')(seq)
    return jnp.reshape(out, (n, t, num, self.out_width))
