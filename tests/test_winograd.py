"""benchmarks/winograd.py: the Winograd F(2x2, 3x3) convolution that benchmarks/conv_layers.py
times, and both its gradients, against a float64 NumPy reference of the direct convolution."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

import scripts

winograd = scripts.load('winograd')

NHWC = ('NHWC', 'HWIO', 'NHWC')


def reference_conv(x, w, pads):
  """float64 direct 3x3 correlation: Y[n,y,x,o] = sum_{i,j,c} Xpad[n,y+i,x+j,c] W[i,j,c,o]."""
  xp = np.pad(np.asarray(x, np.float64), ((0, 0), pads[0], pads[1], (0, 0)))
  ho, wo = xp.shape[1] - 2, xp.shape[2] - 2
  return sum(np.einsum('nyxc,co->nyxo', xp[:, i:i + ho, j:j + wo], np.asarray(w, np.float64)[i, j])
             for i in range(3) for j in range(3))


def reference_gradients(x, w, g, pads):
  """float64 dX and dW of `reference_conv` for the output cotangent g (scatter of each tap)."""
  x, w, g = (np.asarray(a, np.float64) for a in (x, w, g))
  xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  dxp, dw = np.zeros_like(xp), np.zeros_like(w)
  ho, wo = g.shape[1:3]
  for i in range(3):
    for j in range(3):
      dw[i, j] = np.einsum('nyxc,nyxo->co', xp[:, i:i + ho, j:j + wo], g)
      dxp[:, i:i + ho, j:j + wo] += np.einsum('nyxo,co->nyxc', g, w[i, j])
  h, wd = x.shape[1:3]
  return dxp[:, pads[0][0]:pads[0][0] + h, pads[1][0]:pads[1][0] + wd], dw


PADS = [((1, 1), (1, 1)), ((0, 0), (0, 0)), ((0, 2), (2, 1)), ((2, 0), (1, 2))]


@pytest.mark.parametrize('pads', PADS)
@pytest.mark.parametrize('size', [(6, 6), (5, 7), (3, 4)])
def test_forward_and_gradients_equal_the_float64_reference(pads, size):
  rng = np.random.default_rng(sum(size) + sum(map(sum, pads)))
  x = rng.standard_normal((2, *size, 3))
  w = rng.standard_normal((3, 3, 3, 4))
  with jax.enable_x64(True):
    y, vjp = jax.vjp(lambda x, w: winograd.conv3x3(x, w, pads), jnp.asarray(x), jnp.asarray(w))
    np.testing.assert_allclose(y, reference_conv(x, w, pads), rtol=1e-12, atol=1e-12)
    g = rng.standard_normal(y.shape)
    dx, dw = vjp(jnp.asarray(g))
    dx_ref, dw_ref = reference_gradients(x, w, g, pads)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_ref, rtol=1e-12, atol=1e-12)
    assert y.dtype == dx.dtype == dw.dtype == jnp.float64


def test_float32_round_off_against_xla_jit_and_bfloat16():
  x = jax.random.normal(jax.random.key(0), (4, 16, 16, 32))
  w = jax.random.normal(jax.random.key(1), (3, 3, 32, 16)) / 17
  pads = ((1, 1), (1, 1))
  xla = lambda x, w: lax.conv_general_dilated(x, w, (1, 1), pads, dimension_numbers=NHWC)
  g = jax.random.normal(jax.random.key(2), (4, 16, 16, 16))
  ours = jax.jit(lambda x, w: jax.vjp(lambda x, w: winograd.conv3x3(x, w, pads), x, w))
  y, vjp = ours(x, w)
  y_xla, vjp_xla = jax.vjp(xla, x, w)
  np.testing.assert_allclose(y, y_xla, rtol=1e-4, atol=1e-5)
  for a, b in zip(vjp(g), vjp_xla(g)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-4 * float(jnp.abs(b).max()))
  y16 = winograd.conv3x3(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), pads)
  assert y16.dtype == jnp.bfloat16
  np.testing.assert_allclose(y16.astype(jnp.float32), y_xla, atol=0.05 * float(jnp.abs(y_xla).max()))


def test_applies_only_to_3x3_stride_1_small_pads():
  assert winograd.applies((3, 3, 8, 8), (1, 1), ((1, 1), (1, 1)))
  assert not winograd.applies((3, 3, 8, 8), (2, 2), ((1, 1), (1, 1)))
  assert not winograd.applies((1, 1, 8, 8), (1, 1), ((0, 0), (0, 0)))
  assert not winograd.applies((3, 3, 8, 8), (1, 1), ((3, 3), (1, 1)))
