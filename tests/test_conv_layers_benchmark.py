"""benchmarks/conv_layers.py: its matmul formulations compute the convolution they are timed
against, and a run prints every pass of the chosen layers."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest
import scripts

from jssl.models import conv as jssl_conv

bench = scripts.load('conv_layers')


@pytest.mark.parametrize('stride', [1, 2])
def test_matmul_forms_match_the_convolution(stride):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 8, 8, 5)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 5, 4)), jnp.float32)
  pads = jssl_conv._pads(x.shape, w.shape, (stride, stride), 'SAME')  # pylint: disable=protected-access
  conv = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), pads,
                                               dimension_numbers=bench.NHWC)
  y = conv(x, w)
  np.testing.assert_allclose(bench.forward_im2col(x, w, stride, pads), y, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(bench.forward_per_tap(x, w, stride, pads), y, rtol=1e-5, atol=1e-5)
  patches, ho, wo = bench.im2col(x, 3, stride, pads)
  assert patches.shape == (2 * ho * wo, 45)
  np.testing.assert_allclose(bench.im2col_product(patches, w).reshape(2, ho, wo, 4), y,
                             rtol=1e-5, atol=1e-5)
  g = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  (kernel_grad,) = jax.vjp(lambda w: conv(x, w), w)[1](g)
  np.testing.assert_allclose(bench.kernel_grad_im2col(x, g, 3, stride, pads), kernel_grad,
                             rtol=1e-4, atol=1e-4)


def test_a_run_times_every_pass_of_the_chosen_layers(capsys):
  rows, totals = bench.main(['--batch', '2', '--layers', 'l4sc,l4', '--reps', '1'])
  assert [name for name, _, _ in rows] == ['l4sc', 'l4']
  assert {'jssl_forward', 'jssl_input_grad', 'jssl_kernel_grad'} <= set(rows[0][2])
  assert {'im2col_forward', 'per_tap_forward', 'im2col_kernel_grad'} <= set(rows[1][2])
  assert totals['jssl_forward'] == pytest.approx(rows[0][2]['jssl_forward'] +
                                                 3 * rows[1][2]['jssl_forward'])
  printed = capsys.readouterr().out
  assert 'l4 (x3):' in printed
  table = printed[printed.index('| layer (count)'):].splitlines()
  assert table[2].startswith('| l4sc (1) | ') and table[3].startswith('| l4 (3) | ')
  header = [cell.strip() for cell in table[0].split('|')[1:-1]]
  total = [cell.strip() for cell in table[4].split('|')[1:-1]]
  # Totals only for the passes every layer has: the 1x1 shortcut has no matmul forms.
  assert total[header.index('jssl forward')] == f"{totals['jssl_forward']:.0f}"
  assert total[header.index('im2col forward')] == ''


def test_unknown_layer_is_named():
  with pytest.raises(SystemExit):
    bench.main(['--layers', 'l9'])
