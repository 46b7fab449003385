"""jssl.methods.ema: the cosine momentum schedule, EMA updates and queues, exactly."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jssl.methods import ema


@pytest.mark.parametrize('base,total', [(0.99, 100), (0.996, 1000)])
def test_cosine_momentum_matches_hand_computation(base, total):
  for k in (0, 1, total // 3, total // 2, total - 1, total):
    want = 1 - (1 - base) * (math.cos(math.pi * k / total) + 1) / 2
    np.testing.assert_allclose(float(ema.cosine_momentum(k, total, base)), want, rtol=0,
                               atol=1e-7)
  assert float(ema.cosine_momentum(0, total, base)) == pytest.approx(base)
  assert float(ema.cosine_momentum(total, total, base)) == 1.0


def test_ema_update_exact():
  target = {'a': jnp.array([1.0, 2.0]), 'b': {'c': jnp.array(4.0)}}
  online = {'a': jnp.array([3.0, -2.0]), 'b': {'c': jnp.array(0.0)}}
  out = ema.ema_update(target, online, 0.75)
  np.testing.assert_allclose(out['a'], [0.75 * 1 + 0.25 * 3, 0.75 * 2 - 0.25 * 2], rtol=1e-7)
  np.testing.assert_allclose(out['b']['c'], 3.0, rtol=1e-7)
  same = ema.ema_update(target, online, 1.0)
  np.testing.assert_array_equal(same['a'], target['a'])


def _rows(start, n, dim=2):
  return jnp.arange(start, start + n, dtype=jnp.float32)[:, None] * jnp.ones((1, dim))


def test_queue_fifo_divisible_size():
  q = ema.queue_init(6, 2)
  assert int(q['count']) == 0 and int(q['ptr']) == 0
  q = ema.queue_push(q, _rows(0, 3))
  np.testing.assert_array_equal(ema.queue_ordered(q)[:, 0], [0, 1, 2])
  q = ema.queue_push(q, _rows(3, 3))
  assert int(q['ptr']) == 0 and int(q['count']) == 6
  q = ema.queue_push(q, _rows(6, 3))  # overwrites the oldest three
  np.testing.assert_array_equal(q['items'][:, 0], [6, 7, 8, 3, 4, 5])
  np.testing.assert_array_equal(ema.queue_ordered(q)[:, 0], [3, 4, 5, 6, 7, 8])


def test_queue_wraps_around_mid_push():
  q = ema.queue_init(5, 2)
  q = ema.queue_push(q, _rows(0, 3))
  q = ema.queue_push(q, _rows(3, 3))  # rows 3, 4 at the end, row 5 wraps to slot 0
  np.testing.assert_array_equal(q['items'][:, 0], [5, 1, 2, 3, 4])
  assert int(q['ptr']) == 1 and int(q['count']) == 5
  np.testing.assert_array_equal(ema.queue_ordered(q)[:, 0], [1, 2, 3, 4, 5])
  q = ema.queue_push(q, _rows(6, 3))
  np.testing.assert_array_equal(ema.queue_ordered(q)[:, 0], [4, 5, 6, 7, 8])


def test_queue_push_under_jit_and_too_many_rows():
  import jax  # pylint: disable=g-import-not-at-top
  q = ema.queue_init(4, 2)
  push = jax.jit(ema.queue_push)
  for start in range(0, 12, 2):
    q = push(q, _rows(start, 2))
  np.testing.assert_array_equal(ema.queue_ordered(q)[:, 0], [8, 9, 10, 11])
  with pytest.raises(ValueError, match='cannot push 5 rows'):
    ema.queue_push(q, _rows(0, 5))
