"""Tests of jssl.losses.metric (margin_loss, triplet_loss) against spec/losses.md.

References are written from the spec text in float64 NumPy with explicit per-row loops.
"""

import functools
import re

import hypothesis
import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses

HYP = hypothesis.settings(max_examples=25, deadline=None)
# Relative tolerance of a bfloat16-input result against the float32-input result (bf16 keeps
# 8 mantissa bits, ~4e-3 relative rounding per input, amplified a little by the margin hinge).
BF16_RTOL = 2e-2


def pnorm64(v, p):
  """||v||_p in float64."""
  return float(np.sum(np.abs(v) ** p) ** (1.0 / p))


def margin_ref(x1, x2, y, margin=1.0, p=2.0):
  """mean_i max(0, y_i (||x1_i - x2_i||_p - margin)), one row at a time."""
  x1, x2, y = (np.asarray(a, np.float64) for a in (x1, x2, y))
  terms = []
  for i in range(x1.shape[0]):
    d = pnorm64(x1[i] - x2[i], p)
    terms.append(max(0.0, y[i] * (d - margin)))
  return float(np.mean(terms))


def triplet_ref(a, pos, neg, margin=1.0, p=2.0):
  """mean_i max(0, ||a_i - p_i||_p - ||a_i - n_i||_p + margin), one row at a time."""
  a, pos, neg = (np.asarray(x, np.float64) for x in (a, pos, neg))
  terms = []
  for i in range(a.shape[0]):
    terms.append(max(0.0, pnorm64(a[i] - pos[i], p) - pnorm64(a[i] - neg[i], p) + margin))
  return float(np.mean(terms))


def num_grad(f, x, eps=1e-6):
  """Central-difference gradient of a float64 scalar function, every coordinate."""
  x = np.array(x, np.float64)
  g = np.zeros_like(x)
  for idx in np.ndindex(x.shape):
    xp, xm = x.copy(), x.copy()
    xp[idx] += eps
    xm[idx] -= eps
    g[idx] = (f(xp) - f(xm)) / (2 * eps)
  return g


def labels(rng, n):
  """Random labels in {-1, +1} as float32."""
  return rng.choice([-1.0, 1.0], size=n).astype(np.float32)


def assert_f32_scalar(x):
  """The loss is a float32 scalar."""
  assert jnp.shape(x) == ()
  assert x.dtype == jnp.float32


def assert_names(exc_info, name):
  """The error message names the argument at fault (as a whole word)."""
  msg = str(exc_info.value)
  assert re.search(rf'\b{re.escape(name)}\b', msg), msg


SHAPES = [(1, 3), (2, 5), (3, 4), (5, 7), (7, 33), (4, 16)]


# --------------------------------------------------------------------------------- margin_loss

@pytest.mark.parametrize('n,d', SHAPES)
@pytest.mark.parametrize('margin,p', [(1.0, 2.0), (0.5, 1.0), (2.5, 3.0)])
def test_margin_matches_reference(n, d, margin, p):
  rng = np.random.default_rng(100 * n + d)
  x1 = rng.normal(size=(n, d)).astype(np.float32)
  x2 = rng.normal(size=(n, d)).astype(np.float32) * 0.5
  y = labels(rng, n)
  got = losses.margin_loss(x1, x2, y, margin=margin, p=p)
  assert_f32_scalar(got)
  np.testing.assert_allclose(float(got), margin_ref(x1, x2, y, margin, p), rtol=1e-5, atol=1e-5)


def test_margin_both_label_branches_are_active():
  """Hand values: y=+1 pays beyond the margin, y=-1 pays inside it."""
  x1 = np.zeros((4, 2), np.float32)
  x2 = np.array([[3.0, 4.0], [0.3, 0.4], [3.0, 4.0], [0.3, 0.4]], np.float32)  # d = 5, .5, 5, .5
  y = np.array([1.0, 1.0, -1.0, -1.0], np.float32)
  # terms: max(0, 5-1)=4, max(0, .5-1)=0, max(0, -(5-1))=0, max(0, -(.5-1))=.5
  np.testing.assert_allclose(float(losses.margin_loss(x1, x2, y)), (4 + 0 + 0 + 0.5) / 4,
                             rtol=1e-6)
  np.testing.assert_allclose(float(losses.margin_loss(x1, x2, y, margin=6.0)),
                             (0 + 0 + 1 + 5.5) / 4, rtol=1e-6)


def test_margin_zero_when_similar_within_and_dissimilar_beyond():
  rng = np.random.default_rng(1)
  n, d, m = 6, 5, 1.5
  x1 = rng.normal(size=(n, d)).astype(np.float32)
  u = rng.normal(size=(n, d))
  u /= np.linalg.norm(u, axis=1, keepdims=True)
  y = np.array([1, -1, 1, -1, 1, -1], np.float32)
  dist = np.where(y > 0, 0.9 * m, 1.3 * m)[:, None]
  x2 = (x1 + dist * u).astype(np.float32)
  assert float(losses.margin_loss(x1, x2, y, margin=m)) == 0.0
  # Flip the labels: every pair now violates, and the loss equals the reference (>0).
  got = float(losses.margin_loss(x1, x2, -y, margin=m))
  assert got > 0.1
  np.testing.assert_allclose(got, margin_ref(x1, x2, -y, m), rtol=1e-5)


def test_margin_jit_equals_eager():
  rng = np.random.default_rng(2)
  x1, x2 = rng.normal(size=(2, 5, 6)).astype(np.float32)
  y = labels(rng, 5)
  f = functools.partial(losses.margin_loss, margin=2.0, p=1.0)
  np.testing.assert_allclose(float(jax.jit(f)(x1, x2, y)), float(f(x1, x2, y)), rtol=1e-6)


@pytest.mark.parametrize('p', [1.0, 2.0, 3.0])
def test_margin_grad_matches_finite_differences(p):
  rng = np.random.default_rng(3)
  x1, x2 = rng.normal(size=(2, 4, 3))
  y = np.array([1.0, -1.0, -1.0, 1.0])
  g = jax.grad(functools.partial(losses.margin_loss, margin=2.0, p=p))(
      x1.astype(np.float32), x2.astype(np.float32), y.astype(np.float32))
  ref = num_grad(lambda v: margin_ref(v, x2, y, 2.0, p), x1)
  assert np.abs(ref).max() > 0.1  # both hinge branches contribute
  np.testing.assert_allclose(np.asarray(g), ref, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize('p', [1.0, 2.0, 3.0])
@pytest.mark.parametrize('y', [1.0, -1.0])
def test_margin_grad_finite_at_identical_pair(p, y):
  """d = 0 (x1 == x2): the norm is not differentiable there, the gradient must stay finite."""
  x = np.random.default_rng(4).normal(size=(3, 4)).astype(np.float32)
  yy = np.full((3,), y, np.float32)
  loss, (g1, g2) = jax.value_and_grad(
      functools.partial(losses.margin_loss, p=p), argnums=(0, 1))(x, x, yy)
  assert float(loss) == (0.0 if y > 0 else 1.0)
  assert np.all(np.isfinite(np.asarray(g1))) and np.all(np.isfinite(np.asarray(g2)))


def test_margin_bf16():
  rng = np.random.default_rng(5)
  x1, x2 = rng.normal(size=(2, 6, 10)).astype(np.float32)
  y = labels(rng, 6)
  b1, b2 = jnp.asarray(x1, jnp.bfloat16), jnp.asarray(x2, jnp.bfloat16)
  got = losses.margin_loss(b1, b2, jnp.asarray(y, jnp.bfloat16))
  assert_f32_scalar(got)
  # Computed in float32 from the bf16-rounded inputs: tight.
  ref_rounded = margin_ref(np.asarray(b1, np.float32), np.asarray(b2, np.float32), y)
  np.testing.assert_allclose(float(got), ref_rounded, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(got), float(losses.margin_loss(x1, x2, y)), rtol=BF16_RTOL)


@HYP
@hypothesis.given(
    x1=hnp.arrays(np.float32, (4, 3), elements=st.floats(-10, 10, width=32)),
    x2=hnp.arrays(np.float32, (4, 3), elements=st.floats(-10, 10, width=32)),
    y=hnp.arrays(np.float32, (4,), elements=st.sampled_from([-1.0, 1.0])),
    margin=st.floats(0.0, 5.0))
def test_margin_property_nonnegative_and_reference(x1, x2, y, margin):
  got = float(losses.margin_loss(x1, x2, y, margin=margin))
  assert got >= 0.0
  np.testing.assert_allclose(got, margin_ref(x1, x2, y, margin), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('use_jit', [False, True])
@pytest.mark.parametrize('args,name', [
    (((5,), (5,), (5,)), 'x1'),
    (((4, 3), (4, 5), (4,)), 'x2'),
    (((4, 3), (3, 3), (4,)), 'x2'),
    (((4, 3), (4, 3), (4, 1)), 'y'),
    (((4, 3), (4, 3), (5,)), 'y'),
])
def test_margin_bad_input_names_argument(args, name, use_jit):
  arrays = [np.ones(s, np.float32) for s in args]
  f = jax.jit(losses.margin_loss) if use_jit else losses.margin_loss
  with pytest.raises((AssertionError, ValueError, TypeError)) as exc:
    f(*arrays)
  assert_names(exc, name)


# -------------------------------------------------------------------------------- triplet_loss

@pytest.mark.parametrize('n,d', SHAPES)
@pytest.mark.parametrize('margin,p', [(1.0, 2.0), (0.3, 1.0), (2.0, 3.0)])
def test_triplet_matches_reference(n, d, margin, p):
  rng = np.random.default_rng(200 * n + d)
  a, pos, neg = rng.normal(size=(3, n, d)).astype(np.float32)
  got = losses.triplet_loss(a, pos, neg, margin=margin, p=p)
  assert_f32_scalar(got)
  np.testing.assert_allclose(float(got), triplet_ref(a, pos, neg, margin, p), rtol=1e-5,
                             atol=1e-5)


def test_triplet_hand_value():
  a = np.zeros((2, 2), np.float32)
  pos = np.array([[3.0, 4.0], [0.0, 1.0]], np.float32)  # d_pos = 5, 1
  neg = np.array([[0.0, 2.0], [6.0, 8.0]], np.float32)  # d_neg = 2, 10
  # max(0, 5 - 2 + 1) = 4, max(0, 1 - 10 + 1) = 0
  np.testing.assert_allclose(float(losses.triplet_loss(a, pos, neg)), 2.0, rtol=1e-6)


def test_triplet_zero_when_negatives_far():
  rng = np.random.default_rng(6)
  a = rng.normal(size=(5, 4)).astype(np.float32)
  pos = (a + 0.1 * rng.normal(size=(5, 4))).astype(np.float32)
  neg = (a + 50.0 + rng.normal(size=(5, 4))).astype(np.float32)
  assert float(losses.triplet_loss(a, pos, neg, margin=1.0)) == 0.0
  # Swapping positive and negative makes every triplet violate.
  swapped = float(losses.triplet_loss(a, neg, pos, margin=1.0))
  np.testing.assert_allclose(swapped, triplet_ref(a, neg, pos), rtol=1e-5)
  assert swapped > 50.0


def test_triplet_equals_margin_when_negative_is_anchor_shift():
  """With n_i = a_i (d_neg = 0) the triplet hinge is max(0, d_pos + m): the margin loss with y=+1
  and margin -m."""
  rng = np.random.default_rng(7)
  a, pos = rng.normal(size=(2, 5, 3)).astype(np.float32)
  y = np.ones((5,), np.float32)
  np.testing.assert_allclose(float(losses.triplet_loss(a, pos, a, margin=0.7)),
                             float(losses.margin_loss(a, pos, y, margin=-0.7)), rtol=1e-6)


def test_triplet_jit_equals_eager():
  rng = np.random.default_rng(8)
  a, pos, neg = rng.normal(size=(3, 7, 5)).astype(np.float32)
  f = functools.partial(losses.triplet_loss, margin=0.5, p=3.0)
  np.testing.assert_allclose(float(jax.jit(f)(a, pos, neg)), float(f(a, pos, neg)), rtol=1e-6)


@pytest.mark.parametrize('p', [1.0, 2.0, 3.0])
def test_triplet_grad_matches_finite_differences(p):
  rng = np.random.default_rng(9)
  a, pos, neg = rng.normal(size=(3, 4, 3))
  f = functools.partial(losses.triplet_loss, margin=1.0, p=p)
  ga, gp, gn = jax.grad(f, argnums=(0, 1, 2))(*(x.astype(np.float32) for x in (a, pos, neg)))
  ref_a = num_grad(lambda v: triplet_ref(v, pos, neg, 1.0, p), a)
  ref_p = num_grad(lambda v: triplet_ref(a, v, neg, 1.0, p), pos)
  ref_n = num_grad(lambda v: triplet_ref(a, pos, v, 1.0, p), neg)
  assert np.abs(ref_a).max() > 0.1
  for got, ref in ((ga, ref_a), (gp, ref_p), (gn, ref_n)):
    np.testing.assert_allclose(np.asarray(got), ref, rtol=2e-3, atol=2e-4)


@pytest.mark.parametrize('p', [1.0, 2.0, 3.0])
def test_triplet_grad_finite_at_coincident_points(p):
  x = np.random.default_rng(10).normal(size=(3, 4)).astype(np.float32)
  loss, grads = jax.value_and_grad(functools.partial(losses.triplet_loss, p=p),
                                   argnums=(0, 1, 2))(x, x, x)
  assert float(loss) == 1.0
  for g in grads:
    assert np.all(np.isfinite(np.asarray(g)))


def test_triplet_bf16():
  rng = np.random.default_rng(11)
  a, pos, neg = rng.normal(size=(3, 6, 10)).astype(np.float32)
  b = [jnp.asarray(x, jnp.bfloat16) for x in (a, pos, neg)]
  got = losses.triplet_loss(*b)
  assert_f32_scalar(got)
  ref_rounded = triplet_ref(*(np.asarray(x, np.float32) for x in b))
  np.testing.assert_allclose(float(got), ref_rounded, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(got), float(losses.triplet_loss(a, pos, neg)), rtol=BF16_RTOL)


@HYP
@hypothesis.given(
    x=hnp.arrays(np.float32, (3, 3, 4), elements=st.floats(-10, 10, width=32)),
    margin=st.floats(0.0, 5.0))
def test_triplet_property_nonnegative_and_reference(x, margin):
  a, pos, neg = x
  got = float(losses.triplet_loss(a, pos, neg, margin=margin))
  assert got >= 0.0
  np.testing.assert_allclose(got, triplet_ref(a, pos, neg, margin), rtol=1e-5, atol=1e-4)
  # Lower bound from the hinge: the loss is at least the mean un-clipped term.
  unclipped = np.mean([np.linalg.norm(a[i] - pos[i]) - np.linalg.norm(a[i] - neg[i]) + margin
                       for i in range(3)])
  assert got >= unclipped - 1e-4


@pytest.mark.parametrize('use_jit', [False, True])
@pytest.mark.parametrize('shapes,name', [
    (((4, 3, 1), (4, 3, 1), (4, 3, 1)), 'anchor'),
    (((4, 3), (4, 2), (4, 3)), 'positive'),
    (((4, 3), (4, 3), (5, 3)), 'negative'),
])
def test_triplet_bad_input_names_argument(shapes, name, use_jit):
  arrays = [np.ones(s, np.float32) for s in shapes]
  f = jax.jit(losses.triplet_loss) if use_jit else losses.triplet_loss
  with pytest.raises((AssertionError, ValueError, TypeError)) as exc:
    f(*arrays)
  assert_names(exc, name)
