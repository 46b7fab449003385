"""jssl.models.conv: the per-tap weight gradient against a float64 NumPy reference."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import models
from jssl.models import conv

NHWC = ('NHWC', 'HWIO', 'NHWC')


def reference_weight_gradient(x, g, kernel_hw, strides, pads):
  """float64 loops over the kernel taps: dW[i,j,c,o] = sum_{n,y,x} Xpad[n,s y+i,s x+j,c] G[n,y,x,o]."""
  x, g = np.asarray(x, np.float64), np.asarray(g, np.float64)
  xp = np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))
  (kh, kw), (sh, sw) = kernel_hw, strides
  _, ho, wo, _ = g.shape
  dw = np.zeros((kh, kw, x.shape[-1], g.shape[-1]))
  for i in range(kh):
    for j in range(kw):
      window = xp[:, i:i + (ho - 1) * sh + 1:sh, j:j + (wo - 1) * sw + 1:sw, :]
      dw[i, j] = np.einsum('nyxc,nyxo->co', window, g)
  return dw


CASES = [  # (batch, size, c_in, c_out, kernel, stride, padding)
    (6, 8, 3, 5, 3, 1, 'SAME'),
    (4, 9, 4, 6, 3, 2, 'SAME'),  # odd size: asymmetric SAME padding
    (5, 8, 4, 8, 1, 2, 'SAME'),  # the 1x1 strided shortcut
    (3, 16, 3, 4, 7, 2, ((3, 3), (3, 3))),  # the ImageNet stem
    (2, 7, 2, 3, 3, 1, 'VALID'),
]


@pytest.mark.parametrize('batch,size,cin,cout,k,s,padding', CASES)
def test_gradients_equal_a_float64_reference_and_xla(batch, size, cin, cout, k, s, padding):
  kx, kw_, kg = jax.random.split(jax.random.PRNGKey(batch * size + k), 3)
  x = jax.random.normal(kx, (batch, size, size, cin))
  w = jax.random.normal(kw_, (k, k, cin, cout)) / k
  y_ours = conv.conv_general_dilated(x, w, (s, s), padding, dimension_numbers=NHWC)
  y_xla = lax.conv_general_dilated(x, w, (s, s), padding, dimension_numbers=NHWC)
  np.testing.assert_allclose(y_ours, y_xla, rtol=1e-6, atol=1e-6)
  g = jax.random.normal(kg, y_xla.shape)

  def pullback(fn):
    _, vjp = jax.vjp(lambda x, w: fn(x, w, (s, s), padding, dimension_numbers=NHWC), x, w)
    return vjp(g)

  dx, dw = jax.jit(lambda: pullback(conv.conv_general_dilated))()
  dx_xla, dw_xla = jax.jit(lambda: pullback(lax.conv_general_dilated))()
  pads = conv._pads(x.shape, w.shape, (s, s), padding)
  np.testing.assert_allclose(dw, reference_weight_gradient(x, g, (k, k), (s, s), pads),
                             rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(dw, dw_xla, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(dx, dx_xla, rtol=1e-5, atol=1e-5)


def test_the_batch_chunked_loop_sums_every_chunk(monkeypatch):
  """With a tiny chunk budget the gradient is a scan over 3 chunks of 2 images: same result."""
  x = jax.random.normal(jax.random.PRNGKey(0), (6, 8, 8, 3))
  g = jax.random.normal(jax.random.PRNGKey(1), (6, 8, 8, 4))
  pads = ((1, 1), (1, 1))
  whole = conv.weight_gradient(x, g, (3, 3), (1, 1), pads)
  monkeypatch.setattr(conv, '_CHUNK_BYTES', 2 * 10 * 10 * 3 * 4)
  assert conv._chunk_size(6, 10 * 10 * 3 * 4) == 2
  chunked = conv.weight_gradient(x, g, (3, 3), (1, 1), pads)
  np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(chunked, reference_weight_gradient(x, g, (3, 3), (1, 1), pads),
                             rtol=1e-4, atol=1e-4)


def test_chunk_size_divides_the_batch():
  assert conv._chunk_size(7, 10**9) == 1  # one huge image per chunk
  assert conv._chunk_size(7, 1) == 7
  assert conv._chunk_size(12, 1) == 12
  assert conv._chunk_size(12, 2**21 // 5) == 4  # at most 5 rows fit: the largest divisor <= 5
  assert conv._chunk_size(13, 2**21 // 5) == 1


def test_unsupported_convolutions_fall_back_to_lax():
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 9, 9, 4))
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 2, 4))
  grouped = conv.conv_general_dilated(x, w, (1, 1), 'SAME', dimension_numbers=NHWC,
                                      feature_group_count=2)
  np.testing.assert_allclose(grouped, lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', dimension_numbers=NHWC, feature_group_count=2), rtol=1e-6)
  w = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4, 4))
  dilated = jax.grad(lambda w: conv.conv_general_dilated(
      x, w, (1, 1), 'SAME', rhs_dilation=(2, 2), dimension_numbers=NHWC).sum())(w)
  np.testing.assert_allclose(dilated, jax.grad(lambda w: lax.conv_general_dilated(
      x, w, (1, 1), 'SAME', rhs_dilation=(2, 2), dimension_numbers=NHWC).sum())(w), rtol=1e-5)


def test_a_resnet_trains_the_same_with_either_weight_gradient():
  """Same init, same loss: the ResNet's parameter gradients agree for 'per_tap' and 'xla'."""
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 16, 16, 3))
  grads = {}
  for impl in ('per_tap', 'xla'):
    net = models.resnet('resnet_tiny', width=4, stem='cifar',
                        conv_general_dilated=conv.for_backend(impl, 'cpu'))
    variables = net.init(jax.random.PRNGKey(1), x, train=False)

    def loss(params, net=net, variables=variables):
      h, _ = net.apply({**variables, 'params': params}, x, train=True, mutable=['batch_stats'])
      return jnp.sum(jnp.sin(h))

    grads[impl] = jax.jit(jax.grad(loss))(variables['params'])
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
               grads['per_tap'], grads['xla'])
  assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads['per_tap']))


def test_for_backend_picks_per_tap_on_cpu_only_and_names_a_bad_value():
  assert conv.for_backend('auto', 'cpu') is conv.conv_general_dilated
  assert conv.for_backend('auto', 'gpu') is None and conv.for_backend('auto', 'tpu') is None
  assert conv.for_backend('xla', 'cpu') is None
  assert conv.for_backend('per_tap', 'gpu') is conv.conv_general_dilated
  with pytest.raises(ValueError, match='conv_weight_grad.*im2col'):
    conv.for_backend('im2col', 'cpu')
