"""Winograd F(2x2, 3x3) convolution: a 3x3, stride-1 NHWC convolution as 16 matrix products.

A formulation timed by benchmarks/conv_layers.py against XLA:CPU's convolution and jssl's
per-tap kernel gradient; it is not part of jssl: measured on 2 CPU cores it was no faster over
the ResNet-18 step and took 1.5x the memory (docs/benchmarks.md).

Lavin & Gray (2016): each 2x2 output tile of a 3x3 correlation is

  Y = A^T [(G W G^T) (.) (B^T D B)] A,

for the 4x4 input tile D, with (.) the elementwise product over the 4x4 transformed positions,
and, summed over the input channels, one `[tiles, C_in] x [C_in, C_out]` matrix product per
position: 16 products of 4/9 the multiply-adds of the direct convolution, plus cheap
transforms (adds and subtractions of strided slices). The matrices:

  B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
  G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
  A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

The gradients use the same transforms: the input gradient is the same convolution of the
output cotangent with the kernel turned by 180 degrees (input and output channels swapped),
and the kernel gradient is the transpose of Y's map from W, summed over tiles:

  dW = G^T [sum_tiles (B^T D B) (.) (A dY A^T)] G,

again 16 matrix products, `[C_in, tiles] x [tiles, C_out]`. Values equal the direct
convolution's up to float rounding (tested against XLA's in float64). Only 3x3, stride-1,
undilated convolutions with paddings of 0 to 2 are covered: `applies` says which.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

_G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float32)


def _accumulator(dtype):
  """The products' accumulation dtype: float32, or float64 for float64 inputs."""
  return jnp.promote_types(dtype, jnp.float32)


def applies(kernel_shape, strides, pads) -> bool:
  """Whether a (kernel [3, 3, C_in, C_out], strides, ((top, bottom), (left, right))) conv fits."""
  return (tuple(kernel_shape[:2]) == (3, 3) and tuple(strides) == (1, 1)
          and all(0 <= p <= 2 for pair in pads for p in pair))


def _input_transform(x, axis: int, tiles: int):
  """B^T D along `axis` for every tile t (rows 2t .. 2t + 3): four arrays with `tiles` there."""
  d = [lax.slice_in_dim(x, i, i + 2 * tiles - 1, stride=2, axis=axis) for i in range(4)]
  return [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]


def _output_transform(m):
  """A^T M along the first axis of `m` (4 transformed positions) -> the tile's 2 outputs."""
  return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


def _cotangent_transform(g):
  """A dY for the tile's 2 output cotangents -> the 4 transformed positions."""
  return [g[0], g[0] + g[1], g[0] - g[1], -g[1]]


def _tiles(x, pads, out_hw):
  """The padded input (whole 4x4 tiles covering `out_hw`) and the tile counts."""
  th, tw = (out_hw[0] + 1) // 2, (out_hw[1] + 1) // 2
  (top, bottom), (left, right) = pads
  h, w = x.shape[1:3]
  xp = jnp.pad(x, ((0, 0), (top, 2 * th + 2 - h - top), (left, 2 * tw + 2 - w - left), (0, 0)))
  return xp, th, tw


def _transformed_input(x, pads, out_hw):
  """B^T D B for every tile: `[16, N * th * tw, C]` (position-major), and th, tw."""
  xp, th, tw = _tiles(x, pads, out_hw)
  rows = _input_transform(xp, 1, th)
  v = jnp.stack([c for r in rows for c in _input_transform(r, 2, tw)])
  return v.reshape(16, -1, x.shape[-1]), th, tw


def _out_hw(x_shape, pads):
  return (x_shape[1] + pads[0][0] + pads[0][1] - 2, x_shape[2] + pads[1][0] + pads[1][1] - 2)


def forward(x, w, pads):
  """The 3x3 stride-1 correlation of NHWC `x` with HWIO `w` and `pads`, by Winograd."""
  n, co = x.shape[0], w.shape[-1]
  ho, wo = _out_hw(x.shape, pads)
  v, th, tw = _transformed_input(x, pads, (ho, wo))
  g = jnp.asarray(_G, w.dtype)
  u = jnp.einsum('ai,ijcd,bj->abcd', g, w, g).reshape(16, w.shape[2], co)
  m = lax.dot_general(v, u.astype(v.dtype), (((2,), (1,)), ((0,), (0,))),
                      preferred_element_type=_accumulator(v.dtype))
  m = m.reshape(4, 4, n, th, tw, co)
  y = [_output_transform(r) for r in _output_transform(m)]  # y[i][j]: [N, th, tw, C_out]
  y = jnp.stack([jnp.stack(r, axis=3) for r in y], axis=2)  # [N, th, 2, tw, 2, C_out]
  return y.reshape(n, 2 * th, 2 * tw, co)[:, :ho, :wo].astype(x.dtype)


def weight_gradient(x, g, pads):
  """dW (HWIO; float32 sums, float64 for float64 inputs) of `forward(x, W, pads)` for the output cotangent `g`."""
  co = g.shape[-1]
  ho, wo = g.shape[1:3]
  v, th, tw = _transformed_input(x, pads, (ho, wo))
  gp = jnp.pad(g, ((0, 0), (0, 2 * th - ho), (0, 2 * tw - wo), (0, 0)))
  rows = _cotangent_transform([gp[:, i::2] for i in range(2)])
  gt = jnp.stack([c for r in rows for c in _cotangent_transform([r[:, :, j::2] for j in range(2)])])
  gt = gt.reshape(16, -1, co)
  m = lax.dot_general(v, gt.astype(v.dtype), (((1,), (1,)), ((0,), (0,))),
                      preferred_element_type=_accumulator(v.dtype))  # [16, C_in, C_out]
  g = jnp.asarray(_G, m.dtype)
  return jnp.einsum('ai,abcd,bj->ijcd', g, m.reshape(4, 4, *m.shape[1:]), g)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def conv3x3(x, w, pads):
  """`forward` with Winograd gradients (module docstring); pads ((top, bottom), (left, right))."""
  return forward(x, w, pads)


def _conv3x3_fwd(x, w, pads):
  return forward(x, w, pads), (x, w)


def _conv3x3_bwd(pads, residuals, g):
  x, w = residuals
  turned = jnp.swapaxes(w[::-1, ::-1], 2, 3)
  dx = forward(g.astype(x.dtype), turned, tuple((2 - a, 2 - b) for a, b in pads))
  return dx, weight_gradient(x, g, pads).astype(w.dtype)


conv3x3.defvjp(_conv3x3_fwd, _conv3x3_bwd)
