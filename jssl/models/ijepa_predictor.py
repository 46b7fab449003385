"""I-JEPA's predictor (Assran et al., 2023): a narrow ViT from the context to each target block.

`IJEPAPredictor(...)(tokens, context_ids, context_valid, target_ids, target_valid, grid, train)
-> [N, T, M, out_width]`:
- `tokens [N, K, D_enc]`: the context encoder's outputs at the K gathered context slots,
  `context_ids [N, K]` their patch indices (row-major on `grid = (rows, cols)`) and
  `context_valid [N, K]` bool which slots hold context (the others are padding);
  `target_ids [N, T, M]` / `target_valid [N, T, M]`: each of the T target blocks' patch indices,
  padded to M slots (`jssl.data.masks.ijepa_indices` makes all four).
- The context encodings are embedded linearly to `width` and given the fixed 2-D sin-cos
  position embedding of their patch; each target slot gets a learned mask token plus its
  patch's position embedding: the predictor sees the target's positions, never its content.
- For each (image, target block) one sequence of K + M slots, the K context slots then the
  block's M target slots. The N * T sequences (image-major: row `i * T + j` is image i, block j)
  go through `depth` pre-norm ViT blocks whose attention keys are only the valid slots, so a
  block's predictions depend on the context and on that block's positions alone, never on the
  other blocks or on padding (what I-JEPA's predictor sees: the context tokens and one block's
  mask tokens). Then a LayerNorm and a linear map back to `out_width` (the encoder's width).
- The output at target slot m of block j is the prediction of the target encoder's token at
  patch `target_ids[:, j, m]`; padding slots hold values to ignore (the loss masks them out).
Init as the ViT: Dense xavier_uniform, biases zero, mask token normal(0.02). I-JEPA's ViT-H/14
predictor: width 384, depth 12, 12 heads.
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
  def __call__(self, tokens, context_ids, context_valid, target_ids, target_valid,
               grid: Tuple[int, int], train: bool = True):
    del train  # no dropout / drop path in I-JEPA's predictor
    rows, cols = grid
    if jnp.ndim(tokens) != 3:
      raise ValueError(f'IJEPAPredictor: tokens must be [N, K, D], got {jnp.shape(tokens)}')
    n, k = jnp.shape(tokens)[:2]
    for name, a in (('context_ids', context_ids), ('context_valid', context_valid)):
      if jnp.shape(a) != (n, k):
        raise ValueError(f'IJEPAPredictor: {name} must be [N, K] = {(n, k)} (the tokens\' '
                         f'leading axes), got {jnp.shape(a)}')
    if jnp.ndim(target_ids) != 3 or jnp.shape(target_ids)[0] != n:
      raise ValueError(f'IJEPAPredictor: target_ids must be [N, T, M] with N={n}, got '
                       f'{jnp.shape(target_ids)}')
    if jnp.shape(target_valid) != jnp.shape(target_ids):
      raise ValueError(f'IJEPAPredictor: target_valid must be {jnp.shape(target_ids)} (the shape '
                       f'of target_ids), got {jnp.shape(target_valid)}')
    t, m = jnp.shape(target_ids)[1:]
    pos = jnp.asarray(sincos_2d(self.width, rows, cols), self.dtype)  # [L, W]
    x = nn.Dense(self.width, kernel_init=dense_init, dtype=self.dtype, name='embed')(tokens)
    x = x + pos[context_ids]  # [N, K, W]
    mask_token = self.param('mask_token', token_init, (1, 1, self.width), jnp.float32)
    queries = jnp.asarray(mask_token, self.dtype) + pos[target_ids]  # [N, T, M, W]
    seq = jnp.concatenate([jnp.broadcast_to(x[:, None], (n, t, k, self.width)), queries], 2)
    seq = jnp.reshape(seq, (n * t, k + m, self.width))
    keys = jnp.concatenate([jnp.broadcast_to(jnp.asarray(context_valid, bool)[:, None], (n, t, k)),
                            jnp.asarray(target_valid, bool)], axis=2)
    keys = jnp.reshape(keys, (n * t, k + m))
    for i in range(self.depth):
      seq = Block(self.num_heads, self.mlp_ratio, 0.0, None, self.dtype, self.attention_impl,
                  name=f'block{i}')(seq, True, keys)
    seq = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name='norm')(seq[:, k:])
    out = nn.Dense(self.out_width, kernel_init=dense_init, dtype=self.dtype, name='proj')(seq)
    return jnp.reshape(out, (n, t, m, self.out_width))
