"""Tests of jssl.losses.metric (margin_loss, triplet_loss) against docs/losses.md.

References are written from docs/losses.md in float64 NumPy with explicit per-row loops.
Jitted wrappers are shared between tests (margin traced, p static) to keep compilations few.
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
# 8 mantissa bits, ~4e-3 relative rounding per input, amplified a little by the hinge).
BF16_RTOL = 2e-2
ERRORS = (AssertionError, ValueError, TypeError)

margin_jit = jax.jit(losses.margin_loss, static_argnames=('p',))
triplet_jit = jax.jit(losses.triplet_loss, static_argnames=('p',))


@functools.lru_cache(maxsize=None)
def margin_vg(p):
  """Jitted value and gradient (w.r.t. x1, x2) of margin_loss with the margin traced."""
  f = lambda x1, x2, y, m: losses.margin_loss(x1, x2, y, margin=m, p=p)
  return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))


@functools.lru_cache(maxsize=None)
def triplet_vg(p):
  """Jitted value and gradient (w.r.t. all three inputs) of triplet_loss, margin traced."""
  f = lambda a, pos, neg, m: losses.triplet_loss(a, pos, neg, margin=m, p=p)
  return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))


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


# (N, D, p): odd sizes, each norm order at least once.
SWEEP = [(1, 3, 2.0), (2, 5, 1.0), (3, 4, 3.0), (4, 3, 2.0), (5, 7, 1.0), (7, 33, 2.0)]


# --------------------------------------------------------------------------------- margin_loss

@pytest.mark.parametrize('n,d,p', SWEEP)
def test_margin_matches_reference(n, d, p):
  rng = np.random.default_rng(100 * n + d)
  for margin in (1.0, 0.4, 2.5):
    x1 = rng.normal(size=(n, d)).astype(np.float32)
    x2 = (rng.normal(size=(n, d)) * 0.5).astype(np.float32)
    y = labels(rng, n)
    got = margin_jit(x1, x2, y, margin=margin, p=p)
    assert_f32_scalar(got)
    np.testing.assert_allclose(float(got), margin_ref(x1, x2, y, margin, p), rtol=1e-5,
                               atol=1e-5)


def test_margin_hand_values_both_label_branches():
  """y=+1 pays beyond the margin, y=-1 pays inside it (the hinge form of docs/losses.md)."""
  x1 = np.zeros((4, 3), np.float32)
  x2 = np.array([[3, 4, 0], [.3, .4, 0], [3, 4, 0], [.3, .4, 0]], np.float32)  # d = 5, .5, 5, .5
  y = np.array([1.0, 1.0, -1.0, -1.0], np.float32)
  # terms: max(0, 5-1)=4, max(0, .5-1)=0, max(0, -(5-1))=0, max(0, -(.5-1))=.5
  np.testing.assert_allclose(float(margin_jit(x1, x2, y, margin=1.0, p=2.0)), 4.5 / 4, rtol=1e-6)
  # margin 6: 0, 0, 1, 5.5
  np.testing.assert_allclose(float(margin_jit(x1, x2, y, margin=6.0, p=2.0)), 6.5 / 4, rtol=1e-6)
  # p = 1: d = 7, .7, 7, .7 -> 6, 0, 0, .3
  np.testing.assert_allclose(float(margin_jit(x1, x2, y, margin=1.0, p=1.0)), 6.3 / 4, rtol=1e-6)


def test_margin_zero_when_similar_within_and_dissimilar_beyond():
  rng = np.random.default_rng(1)
  n, d, m = 5, 7, 1.5
  x1 = rng.normal(size=(n, d)).astype(np.float32)
  u = rng.normal(size=(n, d))
  u /= np.linalg.norm(u, axis=1, keepdims=True)
  y = np.array([1, -1, 1, -1, 1], np.float32)
  dist = np.where(y > 0, 0.9 * m, 1.3 * m)[:, None]
  x2 = (x1 + dist * u).astype(np.float32)
  assert float(margin_jit(x1, x2, y, margin=m, p=2.0)) == 0.0
  # Flip the labels: every pair now violates, and the loss equals the reference (> 0).
  got = float(margin_jit(x1, x2, -y, margin=m, p=2.0))
  assert got > 0.1
  np.testing.assert_allclose(got, margin_ref(x1, x2, -y, m), rtol=1e-5)


def test_margin_jit_equals_eager():
  rng = np.random.default_rng(2)
  x1, x2 = rng.normal(size=(2, 5, 7)).astype(np.float32)
  y = labels(rng, 5)
  eager = losses.margin_loss(x1, x2, y, margin=2.0, p=2.0)
  assert_f32_scalar(eager)
  np.testing.assert_allclose(float(margin_jit(x1, x2, y, margin=2.0, p=2.0)), float(eager),
                             rtol=1e-6)


@pytest.mark.parametrize('p', [1.0, 2.0, 3.0])
def test_margin_grad(p):
  """Gradient equals float64 central differences; finite where x1 == x2 (d = 0) for both y."""
  rng = np.random.default_rng(3)
  x1, x2 = rng.normal(size=(2, 4, 3))
  y = np.array([1.0, -1.0, -1.0, 1.0])
  _, (g1, g2) = margin_vg(p)(x1.astype(np.float32), x2.astype(np.float32),
                             y.astype(np.float32), 2.0)
  ref1 = num_grad(lambda v: margin_ref(v, x2, y, 2.0, p), x1)
  assert np.abs(ref1).max() > 0.1  # some hinge is active
  np.testing.assert_allclose(np.asarray(g1), ref1, rtol=2e-3, atol=2e-4)
  np.testing.assert_allclose(np.asarray(g2), -ref1, rtol=2e-3, atol=2e-4)
  x = x1.astype(np.float32)
  for yy, want in ((1.0, 0.0), (-1.0, 1.0)):
    loss, grads = margin_vg(p)(x, x, np.full((4,), yy, np.float32), 1.0)
    assert float(loss) == want
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


def test_margin_bf16():
  rng = np.random.default_rng(5)
  x1, x2 = rng.normal(size=(2, 7, 33)).astype(np.float32)
  y = labels(rng, 7)
  b1, b2 = jnp.asarray(x1, jnp.bfloat16), jnp.asarray(x2, jnp.bfloat16)
  got = margin_jit(b1, b2, jnp.asarray(y, jnp.bfloat16), margin=1.0, p=2.0)
  assert_f32_scalar(got)
  # Computed in float32 from the bf16-rounded inputs: tight.
  ref_rounded = margin_ref(np.asarray(b1, np.float32), np.asarray(b2, np.float32), y)
  np.testing.assert_allclose(float(got), ref_rounded, rtol=1e-5, atol=1e-5)
  f32 = margin_jit(x1, x2, y, margin=1.0, p=2.0)
  np.testing.assert_allclose(float(got), float(f32), rtol=BF16_RTOL)


@HYP
@hypothesis.given(
    x1=hnp.arrays(np.float32, (4, 3), elements=st.floats(-10, 10, width=32)),
    x2=hnp.arrays(np.float32, (4, 3), elements=st.floats(-10, 10, width=32)),
    y=hnp.arrays(np.float32, (4,), elements=st.sampled_from([-1.0, 1.0])),
    margin=st.floats(0.0, 5.0))
def test_margin_property_nonnegative_and_reference(x1, x2, y, margin):
  got = float(margin_jit(x1, x2, y, margin=margin, p=2.0))
  assert got >= 0.0
  np.testing.assert_allclose(got, margin_ref(x1, x2, y, margin), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize('use_jit', [False, True])
@pytest.mark.parametrize('shapes,name', [
    (((5,), (5,), (5,)), 'x1'),
    (((4, 3), (4, 5), (4,)), 'x2'),
    (((4, 3), (3, 3), (4,)), 'x2'),
    (((4, 3), (4, 3), (4, 1)), 'y'),
    (((4, 3), (4, 3), (5,)), 'y'),
])
def test_margin_bad_input_names_argument(shapes, name, use_jit):
  arrays = [np.ones(s, np.float32) for s in shapes]
  f = jax.jit(losses.margin_loss) if use_jit else losses.margin_loss
  with pytest.raises(ERRORS) as exc:
    f(*arrays)
  assert_names(exc, name)


# -------------------------------------------------------------------------------- triplet_loss

@pytest.mark.parametrize('n,d,p', SWEEP)
def test_triplet_matches_reference(n, d, p):
  rng = np.random.default_rng(200 * n + d)
  for margin in (1.0, 0.3, 2.0):
    a, pos, neg = rng.normal(size=(3, n, d)).astype(np.float32)
    got = triplet_jit(a, pos, neg, margin=margin, p=p)
    assert_f32_scalar(got)
    np.testing.assert_allclose(float(got), triplet_ref(a, pos, neg, margin, p), rtol=1e-5,
                               atol=1e-5)


def test_triplet_hand_value():
  a = np.zeros((4, 3), np.float32)
  pos = np.array([[3, 4, 0], [0, 1, 0], [1, 0, 0], [0, 0, 2]], np.float32)  # d_pos 5, 1, 1, 2
  neg = np.array([[0, 2, 0], [6, 8, 0], [0, 0, 1], [0, 0, 2.5]], np.float32)  # d_neg 2, 10, 1, 2.5
  # max(0, 5-2+1)=4, max(0, 1-10+1)=0, max(0, 1-1+1)=1, max(0, 2-2.5+1)=.5
  np.testing.assert_allclose(float(triplet_jit(a, pos, neg, margin=1.0, p=2.0)), 5.5 / 4,
                             rtol=1e-6)


def test_triplet_zero_when_negatives_far():
  rng = np.random.default_rng(6)
  a = rng.normal(size=(5, 7)).astype(np.float32)
  pos = (a + 0.1 * rng.normal(size=(5, 7))).astype(np.float32)
  neg = (a + 50.0 + rng.normal(size=(5, 7))).astype(np.float32)
  assert float(triplet_jit(a, pos, neg, margin=1.0, p=1.0)) == 0.0
  # Swapping positive and negative makes every triplet violate.
  swapped = float(triplet_jit(a, neg, pos, margin=1.0, p=1.0))
  np.testing.assert_allclose(swapped, triplet_ref(a, neg, pos, 1.0, 1.0), rtol=1e-5)
  assert swapped > 50.0


def test_triplet_equals_margin_when_negative_is_anchor():
  """With n_i = a_i (d_neg = 0) the hinge is max(0, d_pos + m): margin_loss with y=+1, margin -m."""
  rng = np.random.default_rng(7)
  a, pos = rng.normal(size=(2, 5, 7)).astype(np.float32)
  y = np.ones((5,), np.float32)
  np.testing.assert_allclose(float(triplet_jit(a, pos, a, margin=0.7, p=1.0)),
                             float(margin_jit(a, pos, y, margin=-0.7, p=1.0)), rtol=1e-6)


def test_triplet_jit_equals_eager():
  rng = np.random.default_rng(8)
  a, pos, neg = rng.normal(size=(3, 5, 7)).astype(np.float32)
  eager = losses.triplet_loss(a, pos, neg, margin=0.5, p=2.0)
  assert_f32_scalar(eager)
  np.testing.assert_allclose(float(triplet_jit(a, pos, neg, margin=0.5, p=2.0)), float(eager),
                             rtol=1e-6)


@pytest.mark.parametrize('p', [1.0, 2.0, 3.0])
def test_triplet_grad(p):
  """Gradient equals float64 central differences; finite at a == p == n."""
  rng = np.random.default_rng(9)
  a, pos, neg = rng.normal(size=(3, 4, 3))
  _, grads = triplet_vg(p)(*(x.astype(np.float32) for x in (a, pos, neg)), 1.0)
  refs = (num_grad(lambda v: triplet_ref(v, pos, neg, 1.0, p), a),
          num_grad(lambda v: triplet_ref(a, v, neg, 1.0, p), pos),
          num_grad(lambda v: triplet_ref(a, pos, v, 1.0, p), neg))
  assert np.abs(refs[0]).max() > 0.1
  for got, ref in zip(grads, refs):
    np.testing.assert_allclose(np.asarray(got), ref, rtol=2e-3, atol=2e-4)
  x = a.astype(np.float32)
  loss, grads = triplet_vg(p)(x, x, x, 1.0)
  assert float(loss) == 1.0
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


def test_triplet_bf16():
  rng = np.random.default_rng(11)
  a, pos, neg = rng.normal(size=(3, 7, 33)).astype(np.float32)
  b = [jnp.asarray(x, jnp.bfloat16) for x in (a, pos, neg)]
  got = triplet_jit(*b, margin=1.0, p=2.0)
  assert_f32_scalar(got)
  ref_rounded = triplet_ref(*(np.asarray(x, np.float32) for x in b))
  np.testing.assert_allclose(float(got), ref_rounded, rtol=1e-5, atol=1e-5)
  f32 = triplet_jit(a, pos, neg, margin=1.0, p=2.0)
  np.testing.assert_allclose(float(got), float(f32), rtol=BF16_RTOL)


@HYP
@hypothesis.given(
    x=hnp.arrays(np.float32, (3, 4, 3), elements=st.floats(-10, 10, width=32)),
    margin=st.floats(0.0, 5.0))
def test_triplet_property_nonnegative_and_reference(x, margin):
  a, pos, neg = x
  got = float(triplet_jit(a, pos, neg, margin=margin, p=2.0))
  assert got >= 0.0
  np.testing.assert_allclose(got, triplet_ref(a, pos, neg, margin), rtol=1e-5, atol=1e-4)
  # The hinge only clips: the loss is at least the mean unclipped term.
  unclipped = np.mean([np.linalg.norm(a[i] - pos[i]) - np.linalg.norm(a[i] - neg[i]) + margin
                       for i in range(4)])
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
  with pytest.raises(ERRORS) as exc:
    f(*arrays)
  assert_names(exc, name)
