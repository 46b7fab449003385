"""Tests of jssl.eval.linear_probe: learning, determinism, masks, and the standardization."""

import numpy as np
import pytest

from jssl.eval import linear_probe as lp


def separable(rng, n, num_classes, dim, margin=1.0):
  """Rows labelled by the argmax of a fixed random linear map, kept only with a clear margin."""
  w = rng.normal(size=(dim, num_classes))
  x = rng.normal(size=(4 * n, dim)) * 3.0 + 5.0  # off-centre and scaled: needs standardizing
  scores = (x - 5.0) @ w
  top2 = np.sort(scores, 1)[:, -2:]
  keep = (top2[:, 1] - top2[:, 0]) > margin
  return x[keep][:n].astype(np.float32), np.argmax(scores, 1)[keep][:n].astype(np.int32)


@pytest.fixture(scope='module')
def toy():
  x, y = separable(np.random.default_rng(0), 1100, 4, 16)
  return x[:800], y[:800], x[800:], y[800:]


@pytest.mark.parametrize('optimizer,lr', [('sgd', 0.1), ('adamw', 0.05)])
def test_learns_separable_problem(toy, optimizer, lr):
  res = lp.linear_probe(*toy, num_classes=4, epochs=20, batch_size=64, optimizer=optimizer,
                        lr=lr)
  assert res['linear_train_top1'] >= 0.98
  assert res['linear_top1'] >= 0.97


def test_deterministic_given_seed(toy):
  kw = dict(num_classes=4, epochs=2, batch_size=100, lr=0.01, weight_decay=1e-4)
  a = lp.linear_probe(*toy, seed=3, **kw)
  b = lp.linear_probe(*toy, seed=3, **kw)
  assert a == b
  np.testing.assert_array_equal(lp.batch_order(10, epochs=2, batch_size=4, seed=3),
                                lp.batch_order(10, epochs=2, batch_size=4, seed=3))


def test_batch_order_covers_every_row_once_per_epoch():
  order = lp.batch_order(10, epochs=3, batch_size=4, seed=0)
  assert order.shape == (3, 3, 4)
  for e in range(3):
    assert sorted(order[e].ravel()) == list(range(12))  # 10 rows + 2 padding slots
  assert not np.array_equal(order[0], order[1])


def test_valid_masks(toy):
  """Padding rows (garbage features, wrong labels) must change nothing but the counts."""
  tx, ty, ex, ey = toy
  rng = np.random.default_rng(1)
  pad_x = 1e3 * rng.normal(size=(50, tx.shape[1])).astype(np.float32)
  train_x = np.concatenate([tx, pad_x])
  train_y = np.concatenate([ty, np.zeros(50, np.int32)])
  train_valid = np.arange(850) < 800
  eval_x = np.concatenate([ex, pad_x[:20]])
  eval_y = np.concatenate([ey, np.full(20, 3, np.int32)])
  eval_valid = np.arange(eval_x.shape[0]) < ex.shape[0]
  res = lp.linear_probe(train_x, train_y, eval_x, eval_y, num_classes=4, epochs=20,
                        batch_size=64, optimizer='sgd', lr=0.1, train_valid=train_valid,
                        test_valid=eval_valid)
  assert res['linear_top1'] >= 0.97 and res['linear_train_top1'] >= 0.98
  # Standardization statistics come from the valid rows only.
  mu, inv_std = lp.standardize_stats(train_x, train_valid)
  np.testing.assert_allclose(mu, tx.astype(np.float64).mean(0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(1.0 / np.asarray(inv_std) ** 2, tx.astype(np.float64).var(0),
                             rtol=1e-3)


def test_one_sgd_step_matches_numpy():
  """One full-batch SGD step from zero weights: W = -lr * X^T (softmax(0) - onehot(y)) / N."""
  rng = np.random.default_rng(2)
  x = rng.normal(size=(8, 3)).astype(np.float32)
  y = np.array([0, 1, 1, 0, 1, 0, 0, 1], np.int32)
  grad_w = x.astype(np.float64).T @ (0.5 - np.eye(2)[y]) / 8
  w = -0.5 * grad_w  # lr 0.5; the cosine schedule's first step uses the peak lr
  pred = np.argmax(x @ w, 1)
  res = lp.linear_probe(x, y, x, y, num_classes=2, epochs=1, batch_size=8, optimizer='sgd',
                        lr=0.5, momentum=0.0, standardize=False)
  assert res['linear_top1'] == pytest.approx(np.mean(pred == y))


def test_bad_optimizer():
  with pytest.raises(ValueError, match='optimizer'):
    lp.linear_probe(np.zeros((4, 2)), np.zeros(4), np.zeros((4, 2)), np.zeros(4),
                    num_classes=2, optimizer='lbfgs')
