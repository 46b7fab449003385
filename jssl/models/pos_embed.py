"""Fixed sine-cosine position embeddings (Vaswani et al., 2017; 2-D form of MAE, He et al., 2022).

Computed in NumPy (float64, then float32) from static shapes, so under `jax.jit` they are
constants. `sincos_2d(dim, grid_h, grid_w)` reproduces MAE's `get_2d_sincos_pos_embed` exactly
for square grids and extends it to rectangular ones: the first `dim/2` channels encode a
patch's column (x) coordinate and the last `dim/2` its row (y) coordinate (MAE's code calls them
`emb_h` and `emb_w` but builds them from `meshgrid(w, h)`, i.e. in this order); each half is
`[sin(pos * omega), cos(pos * omega)]` with `omega_k = 10000^(-k / (dim/4))`, k < dim/4.
Rows follow `patchify`'s row-major patch order.
"""

import numpy as np


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
  """`[M]` positions -> `[M, dim]`: `[sin(pos * omega), cos(pos * omega)]`, dim even."""
  if dim % 2:
    raise ValueError(f'sincos_1d: dim must be even, got {dim}')
  omega = 1.0 / 10000**(np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  out = np.reshape(pos, (-1,)).astype(np.float64)[:, None] * omega[None, :]
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid_h: int, grid_w: int, cls_token: bool = False) -> np.ndarray:
  """`[grid_h * grid_w (+1), dim]` float32 table; with `cls_token` a leading row of zeros."""
  if dim % 4:
    raise ValueError(f'sincos_2d: dim must be divisible by 4, got {dim}')
  xs, ys = np.meshgrid(np.arange(grid_w), np.arange(grid_h))  # both [grid_h, grid_w]
  emb = np.concatenate([sincos_1d(dim // 2, xs), sincos_1d(dim // 2, ys)], axis=1)
  if cls_token:
    emb = np.concatenate([np.zeros((1, dim)), emb], axis=0)
  return emb.astype(np.float32)
