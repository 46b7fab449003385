"""VICReg, Barlow Twins, Sinkhorn-Knopp and SwAV against float64 NumPy references (docs/losses.md).

The references below are written from docs/losses.md alone. Tolerances: float32 results are
compared with rtol 1e-5 (atol 1e-6) unless a comment states otherwise.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jssl import losses

RTOL, ATOL = 1e-5, 1e-6
HYP = settings(max_examples=25, deadline=None)

# Jitted entry points (one compile per shape keeps the file fast); eager runs are compared with
# them in the jit tests.
vicreg = jax.jit(losses.vicreg_loss)
vicreg_grad = jax.jit(jax.grad(lambda a, b: losses.vicreg_loss(a, b)[0], argnums=(0, 1)))
barlow = jax.jit(losses.barlow_twins_loss)
barlow_grad = jax.jit(jax.grad(losses.barlow_twins_loss, argnums=(0, 1)))
sinkhorn = jax.jit(losses.sinkhorn, static_argnames='n_iters')
swav = jax.jit(losses.swav_loss, static_argnames=('n_iters', 'assign_crops'))
swav_grad = jax.jit(jax.grad(lambda s, eps: losses.swav_loss(s, epsilon=eps)))


# ----------------------------------------------------------------------------- float64 references

def _lse(x, axis=None):
  m = np.max(x, axis=axis, keepdims=True)
  return m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def _log_softmax(x):
  return x - _lse(x, axis=-1)


def ref_vicreg(z1, z2, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
  """docs/losses.md: inv, var (unbiased, +1e-4 in the sqrt), cov (offdiag^2 / D), weighted sum."""
  z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
  n, d = z1.shape
  inv = np.mean((z1 - z2) ** 2)

  def branch(z):
    zc = z - z.mean(axis=0)
    std = np.sqrt(np.sum(zc**2, axis=0) / (n - 1) + 1e-4)
    cov = zc.T @ zc / (n - 1)
    off = cov - np.diag(np.diag(cov))
    return np.mean(np.maximum(0.0, 1.0 - std)), np.sum(off**2) / d

  v1, c1 = branch(z1)
  v2, c2 = branch(z2)
  var, cov = v1 / 2 + v2 / 2, c1 + c2
  return sim_coeff * inv + std_coeff * var + cov_coeff * cov, (inv, var, cov)


def ref_barlow(z1, z2, lambd=0.0051):
  """docs/losses.md: standardize with the biased variance (+1e-5), c = z1n^T z2n / N."""
  z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
  n = z1.shape[0]
  std = lambda z: (z - z.mean(0)) / np.sqrt(z.var(0) + 1e-5)
  c = std(z1).T @ std(z2) / n
  diag = np.diag(c)
  return np.sum((1 - diag) ** 2) + lambd * (np.sum(c**2) - np.sum(diag**2))


def ref_sinkhorn_direct(scores, epsilon=0.05, n_iters=3):
  """The algorithm of docs/losses.md verbatim (only usable where float64 exp does not overflow)."""
  s = np.asarray(scores, np.float64)
  n, k = s.shape
  q = np.exp(s / epsilon).T
  q = q / q.sum()
  for _ in range(n_iters):
    q = q / q.sum(axis=1, keepdims=True) / k
    q = q / q.sum(axis=0, keepdims=True) / n
  return (q * n).T


def ref_sinkhorn(scores, epsilon=0.05, n_iters=3):
  """The same algorithm on log Q in float64 (exact for any scale of scores)."""
  s = np.asarray(scores, np.float64)
  n, k = s.shape
  lq = s.T / epsilon
  lq = lq - _lse(lq)
  for _ in range(n_iters):
    lq = lq - _lse(lq, axis=1) - np.log(k)
    lq = lq - _lse(lq, axis=0) - np.log(n)
  return np.exp(lq + np.log(n)).T


def ref_swav(scores, temperature=0.1, epsilon=0.05, n_iters=3, assign_crops=(0, 1), codes=None):
  """Swapped prediction (docs/losses.md); `codes[a]` replaces sinkhorn(scores[a]) when given."""
  s = np.asarray(scores, np.float64)
  v = s.shape[0]
  per_a = []
  for a in assign_crops:
    q = ref_sinkhorn(s[a], epsilon, n_iters) if codes is None else codes[a]
    ce = [np.mean(-np.sum(q * _log_softmax(s[w] / temperature), axis=-1))
          for w in range(v) if w != a]
    per_a.append(np.mean(ce))
  return np.mean(per_a)


# ----------------------------------------------------------------------------- helpers

def _rand(seed, *shape, scale=1.0):
  return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _cosine_scores(seed, n, k, d=16):
  rng = np.random.default_rng(seed)
  z, c = rng.standard_normal((n, d)), rng.standard_normal((k, d))
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  c /= np.linalg.norm(c, axis=1, keepdims=True)
  return (z @ c.T).astype(np.float32)


def _decorrelated(seed, n, d, variance_denominator):
  """[N, D] with centred orthogonal columns whose sum of squares / denominator is exactly 1."""
  a = np.random.default_rng(seed).standard_normal((n, d))
  a -= a.mean(axis=0)
  q, _ = np.linalg.qr(a)  # columns orthonormal, in span(a) hence orthogonal to the ones vector
  return q * np.sqrt(variance_denominator)


def _fd_grad(f, x, coords, h=1e-5):
  """Central differences of a float64 function at the given coordinates of x."""
  x = np.asarray(x, np.float64)
  out = []
  for idx in coords:
    xp, xm = x.copy(), x.copy()
    xp[idx] += h
    xm[idx] -= h
    out.append((f(xp) - f(xm)) / (2 * h))
  return np.array(out)


def _coords(seed, shape, count=6):
  rng = np.random.default_rng(seed)
  return [tuple(int(rng.integers(0, s)) for s in shape) for _ in range(count)]


def _assert_raises_naming(fn, args, name):
  """Eagerly and under jit, bad input raises at trace time with a message naming `name`."""
  for g in (fn, jax.jit(fn)):
    with pytest.raises((AssertionError, ValueError, TypeError)) as info:
      g(*args)
    assert re.search(rf'\b{re.escape(name)}\b', str(info.value)), str(info.value)


VICREG_CASES = [  # (seed, N, D, scale1, scale2): scales < 1 keep the variance hinge active
    (0, 5, 3, 0.5, 0.7), (1, 17, 7, 1.3, 0.4), (2, 33, 11, 0.8, 0.8), (3, 2, 4, 0.3, 2.0)]


# ----------------------------------------------------------------------------- VICReg

@pytest.mark.parametrize('seed,n,d,s1,s2', VICREG_CASES)
def test_vicreg_matches_reference(seed, n, d, s1, s2):
  z1, z2 = _rand(seed, n, d, scale=s1), _rand(seed + 100, n, d, scale=s2)
  loss, aux = vicreg(z1, z2)
  want, (inv, var, cov) = ref_vicreg(z1, z2)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, want, rtol=RTOL, atol=ATOL)
  assert set(aux) == {'invariance', 'variance', 'covariance'}
  np.testing.assert_allclose(aux['invariance'], inv, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(aux['variance'], var, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(aux['covariance'], cov, rtol=RTOL, atol=ATOL)
  assert var > 0 and cov > 0 and inv > 0  # every term is exercised


def test_vicreg_coefficients_and_weighted_sum():
  z1, z2 = _rand(4, 17, 7, scale=0.6), _rand(5, 17, 7, scale=0.9)
  loss, aux = vicreg(z1, z2, sim_coeff=2.0, std_coeff=3.0, cov_coeff=0.5)
  want, _ = ref_vicreg(z1, z2, 2.0, 3.0, 0.5)
  np.testing.assert_allclose(loss, want, rtol=RTOL)
  weighted = 2.0 * aux['invariance'] + 3.0 * aux['variance'] + 0.5 * aux['covariance']
  np.testing.assert_allclose(loss, weighted, rtol=1e-6)
  # The aux terms are unweighted: they do not depend on the coefficients.
  _, aux_default = vicreg(z1, z2)
  for key in aux:
    np.testing.assert_allclose(aux[key], aux_default[key], rtol=1e-6)


@pytest.mark.parametrize('n,d', [(17, 7), (33, 11)])
def test_vicreg_minimum_on_decorrelated_unit_variance_views(n, d):
  z = _decorrelated(n, n, d, variance_denominator=n - 1).astype(np.float32)
  np.testing.assert_allclose(np.var(z.astype(np.float64), axis=0, ddof=1), 1.0, rtol=1e-6)
  loss, aux = vicreg(z, z)
  assert float(aux['invariance']) == 0.0
  assert float(aux['variance']) == 0.0  # relu(1 - sqrt(1 + 1e-4)) = 0
  assert abs(float(aux['covariance'])) < 1e-10
  assert abs(float(loss)) < 1e-9
  # Shrinking one column below unit variance activates exactly the variance hinge.
  z_small = z.copy()
  z_small[:, 0] *= 0.5
  _, aux2 = vicreg(z_small, z_small)
  want_var = np.maximum(0, 1 - np.sqrt(0.25 + 1e-4)) / d
  np.testing.assert_allclose(aux2['variance'], want_var, rtol=1e-5)


def test_vicreg_jit_equals_eager():
  z1, z2 = _rand(6, 5, 3, scale=0.7), _rand(7, 5, 3)
  eager = losses.vicreg_loss(z1, z2)
  jitted = vicreg(z1, z2)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), eager, jitted)


def test_vicreg_gradient_matches_finite_differences():
  z1, z2 = _rand(8, 5, 3, scale=0.6), _rand(9, 5, 3, scale=0.5)
  g1, g2 = vicreg_grad(z1, z2)
  coords = _coords(10, z1.shape)
  fd1 = _fd_grad(lambda a: ref_vicreg(a, z2)[0], z1, coords)
  fd2 = _fd_grad(lambda b: ref_vicreg(z1, b)[0], z2, coords)
  np.testing.assert_allclose([g1[c] for c in coords], fd1, rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose([g2[c] for c in coords], fd2, rtol=1e-3, atol=1e-4)


def test_vicreg_gradient_finite_with_constant_column():
  z1, z2 = _rand(11, 5, 3), _rand(12, 5, 3)
  z1[:, 2] = 3.0
  z2[:, 0] = 0.0
  g = vicreg_grad(z1, z2)
  assert all(np.all(np.isfinite(x)) for x in g)
  assert np.isfinite(float(vicreg(z1, z2)[0]))


def test_vicreg_bf16_inputs():
  z1, z2 = _rand(13, 17, 7, scale=0.7), _rand(14, 17, 7, scale=0.9)
  b1, b2 = jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16)
  loss, aux = vicreg(b1, b2)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  assert all(v.dtype == jnp.float32 for v in aux.values())
  # Computed in float32 from the bf16 values: equal to the float32 loss of the upcast inputs.
  up, _ = vicreg(np.asarray(b1, np.float32), np.asarray(b2, np.float32))
  np.testing.assert_allclose(loss, up, rtol=1e-5)
  # bf16 rounding of the inputs (8-bit mantissa) moves the loss by well under 2%.
  np.testing.assert_allclose(loss, vicreg(z1, z2)[0], rtol=2e-2)


_HYP_Z = hnp.arrays(np.float32, (6, 3), elements=st.floats(-2, 2, width=32, allow_subnormal=False))


@HYP
@given(z1=_HYP_Z, z2=_HYP_Z,
       shift=hnp.arrays(np.float32, (3,), elements=st.floats(-3, 3, width=32)))
def test_vicreg_properties(z1, z2, shift):
  loss, aux = vicreg(z1, z2)
  assert all(float(v) >= 0 for v in aux.values())
  np.testing.assert_allclose(
      loss, 25 * aux['invariance'] + 25 * aux['variance'] + aux['covariance'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(vicreg(z2, z1)[0], loss, rtol=1e-5, atol=1e-6)  # symmetric
  # A common translation of both views changes nothing (up to float32 rounding of z + shift).
  np.testing.assert_allclose(vicreg(z1 + shift, z2 + shift)[0], loss, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(loss, ref_vicreg(z1, z2)[0], rtol=1e-4, atol=1e-4)


def test_vicreg_bad_input():
  f = losses.vicreg_loss
  _assert_raises_naming(f, (np.zeros((8, 4), np.float32), np.zeros((8, 5), np.float32)), 'z2')
  _assert_raises_naming(f, (np.zeros((8,), np.float32), np.zeros((8,), np.float32)), 'z1')
  _assert_raises_naming(f, (np.zeros((1, 4), np.float32), np.zeros((1, 4), np.float32)), 'z1')


# ----------------------------------------------------------------------------- Barlow Twins

@pytest.mark.parametrize('seed,n,d', [(0, 5, 3), (1, 17, 7), (2, 33, 11), (3, 3, 9)])
def test_barlow_matches_reference(seed, n, d):
  z1, z2 = _rand(seed, n, d, scale=2.0), _rand(seed + 50, n, d) + 1.5
  loss = barlow(z1, z2)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, ref_barlow(z1, z2), rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(barlow(z1, z2, lambd=0.3), ref_barlow(z1, z2, 0.3), rtol=RTOL,
                             atol=ATOL)


@pytest.mark.parametrize('n,d', [(17, 7), (33, 11)])
def test_barlow_minimum_on_decorrelated_identical_views(n, d):
  z = _decorrelated(n + 7, n, d, variance_denominator=n).astype(np.float32)
  np.testing.assert_allclose(np.var(z.astype(np.float64), axis=0), 1.0, rtol=1e-6)
  loss = float(barlow(z, z))
  exact = d * (1 - 1 / (1 + 1e-5)) ** 2  # c = I / (1 + 1e-5)
  assert abs(loss - exact) < 1e-6, loss
  assert float(barlow(z, -z)) == pytest.approx(4 * d, rel=1e-4)


def test_barlow_invariant_to_per_feature_affine_maps():
  z1, z2 = _rand(20, 17, 7), _rand(21, 17, 7)
  rng = np.random.default_rng(22)
  scale = rng.uniform(0.5, 3.0, size=7).astype(np.float32)
  shift = rng.uniform(-2.0, 2.0, size=7).astype(np.float32)
  base = float(barlow(z1, z2))
  # Only the 1e-5 eps under the sqrt breaks exact invariance: relative change ~1e-5.
  np.testing.assert_allclose(barlow(z1 * scale + shift, z2), base, rtol=1e-4)
  np.testing.assert_allclose(barlow(z1, z2 * scale + shift), base, rtol=1e-4)
  # A sign flip is not such a map: it changes the loss.
  assert abs(float(barlow(-z1, z2)) - base) > 1e-2


def test_barlow_jit_equals_eager():
  z1, z2 = _rand(23, 5, 3), _rand(24, 5, 3)
  np.testing.assert_allclose(barlow(z1, z2), losses.barlow_twins_loss(z1, z2), rtol=1e-6)


def test_barlow_gradient_matches_finite_differences():
  z1, z2 = _rand(25, 5, 3), _rand(26, 5, 3)
  g1, g2 = barlow_grad(z1, z2)
  coords = _coords(27, z1.shape)
  fd1 = _fd_grad(lambda a: ref_barlow(a, z2), z1, coords)
  fd2 = _fd_grad(lambda b: ref_barlow(z1, b), z2, coords)
  np.testing.assert_allclose([g1[c] for c in coords], fd1, rtol=1e-3, atol=1e-4)
  np.testing.assert_allclose([g2[c] for c in coords], fd2, rtol=1e-3, atol=1e-4)


def test_barlow_gradient_finite_with_constant_column():
  z1, z2 = _rand(28, 5, 3), _rand(29, 5, 3)
  z1[:, 1] = -2.0
  z2[:, 2] = 0.0
  g = barlow_grad(z1, z2)
  assert all(np.all(np.isfinite(x)) for x in g)
  assert np.isfinite(float(barlow(z1, z2)))


def test_barlow_bf16_inputs():
  z1, z2 = _rand(30, 33, 11), _rand(31, 33, 11)
  b1, b2 = jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16)
  loss = barlow(b1, b2)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  up = barlow(np.asarray(b1, np.float32), np.asarray(b2, np.float32))
  np.testing.assert_allclose(loss, up, rtol=1e-5)
  np.testing.assert_allclose(loss, barlow(z1, z2), rtol=2e-2)


@HYP
@given(z1=_HYP_Z, z2=_HYP_Z, perm_seed=st.integers(0, 2**16))
def test_barlow_properties(z1, z2, perm_seed):
  loss = barlow(z1, z2)
  assert float(loss) >= 0
  np.testing.assert_allclose(barlow(z2, z1), loss, rtol=1e-5, atol=1e-6)  # symmetric
  perm = np.random.default_rng(perm_seed).permutation(z1.shape[0])
  np.testing.assert_allclose(barlow(z1[perm], z2[perm]), loss, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(loss, ref_barlow(z1, z2), rtol=1e-4, atol=1e-4)


def test_barlow_bad_input():
  f = losses.barlow_twins_loss
  _assert_raises_naming(f, (np.zeros((8, 4), np.float32), np.zeros((7, 4), np.float32)), 'z2')
  _assert_raises_naming(f, (np.zeros((2, 8, 4), np.float32), np.zeros((2, 8, 4), np.float32)), 'z1')


# ----------------------------------------------------------------------------- Sinkhorn

def test_sinkhorn_references_agree():
  """The log-domain float64 reference is docs/losses.md's algorithm (checked where exp is safe)."""
  s = _cosine_scores(0, 11, 6)
  for eps, iters in [(0.05, 3), (0.01, 5), (0.5, 1)]:
    np.testing.assert_allclose(ref_sinkhorn(s, eps, iters), ref_sinkhorn_direct(s, eps, iters),
                               rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize('seed,n,k,eps,iters', [
    (1, 33, 10, 0.05, 3), (2, 7, 13, 0.05, 3), (3, 33, 10, 0.1, 100), (4, 7, 13, 0.02, 3)])
def test_sinkhorn_matches_reference(seed, n, k, eps, iters):
  s = _cosine_scores(seed, n, k)
  q = sinkhorn(s, epsilon=eps, n_iters=iters)
  assert q.shape == (n, k) and q.dtype == jnp.float32
  np.testing.assert_allclose(q, ref_sinkhorn_direct(s, eps, iters), rtol=1e-4, atol=1e-6)


def test_sinkhorn_default_arguments():
  s = _cosine_scores(5, 33, 10)
  np.testing.assert_allclose(sinkhorn(s), ref_sinkhorn(s, 0.05, 3), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize('seed,n,k', [(6, 33, 10), (7, 7, 13)])
def test_sinkhorn_small_epsilon_cosine_scores(seed, n, k):
  # eps = 0.01: exp(scores / eps) reaches e^100, whole columns underflow in a naive float32 run.
  s = _cosine_scores(seed, n, k)
  q = np.asarray(sinkhorn(s, epsilon=0.01, n_iters=3))
  assert np.all(np.isfinite(q))
  # |log q| reaches ~100, float32 carries it to ~1e-5 relative: rtol 1e-4.
  np.testing.assert_allclose(q, ref_sinkhorn(s, 0.01, 3), rtol=1e-4, atol=1e-6)


def test_sinkhorn_large_scores_do_not_overflow():
  s = _cosine_scores(8, 33, 10) * np.float32(50.0)
  with np.errstate(over='ignore'):
    assert not np.all(np.isfinite(np.exp(s / np.float32(0.01))))  # a naive float32 exp overflows
  q = np.asarray(sinkhorn(s, epsilon=0.01, n_iters=3))
  assert np.all(np.isfinite(q))
  # scores / eps reaches 5000, where one float32 ulp is ~5e-4: q is good to ~1e-3 absolute.
  np.testing.assert_allclose(q, ref_sinkhorn(s, 0.01, 3), rtol=0, atol=2e-3)
  np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)


def test_sinkhorn_rows_sum_to_one_and_columns_equipartition():
  s = _cosine_scores(9, 33, 10)
  q3 = np.asarray(sinkhorn(s, n_iters=3))
  np.testing.assert_allclose(q3.sum(axis=1), 1.0, rtol=1e-5)
  q100 = np.asarray(sinkhorn(s, n_iters=100))
  np.testing.assert_allclose(q100.sum(axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(q100.sum(axis=0), 33 / 10, rtol=1e-3)
  # More iterations bring the column sums closer to N/K.
  assert np.abs(q100.sum(0) - 3.3).max() < np.abs(q3.sum(0) - 3.3).max()


def test_sinkhorn_invariances():
  s = _cosine_scores(10, 33, 10)
  rng = np.random.default_rng(11)
  col = rng.uniform(-0.5, 0.5, size=(1, 10)).astype(np.float32)
  row = rng.uniform(-0.5, 0.5, size=(33, 1)).astype(np.float32)
  # A constant per prototype (column of scores) is removed by the first prototype normalization:
  # exact for any n_iters.
  np.testing.assert_allclose(sinkhorn(s + col), sinkhorn(s), rtol=1e-4, atol=1e-6)
  # A constant per sample (row of scores) scales a column of Q; the prototype step comes first,
  # so it is only removed in the limit (reached at n_iters=100 here).
  q_row = sinkhorn(s + row, n_iters=100)
  np.testing.assert_allclose(q_row, sinkhorn(s, n_iters=100), rtol=0, atol=1e-4)
  np.testing.assert_allclose(q_row, ref_sinkhorn(s, 0.05, 100), rtol=0, atol=1e-4)


def test_sinkhorn_is_gradient_free():
  s = _cosine_scores(12, 33, 10)
  w = _rand(13, 33, 10)
  g = jax.jit(jax.grad(lambda x: jnp.sum(losses.sinkhorn(x) * w)))(s)
  np.testing.assert_array_equal(g, np.zeros_like(s))


def test_sinkhorn_jit_and_bf16():
  s9 = _cosine_scores(15, 9, 5)  # the shape of the eager SwAV test (shared eager compiles)
  np.testing.assert_allclose(sinkhorn(s9), losses.sinkhorn(s9), rtol=1e-5, atol=1e-7)
  s = _cosine_scores(14, 7, 13)
  b = jnp.asarray(s, jnp.bfloat16)
  q = sinkhorn(b)
  assert q.dtype == jnp.float32
  np.testing.assert_allclose(q, sinkhorn(np.asarray(b, np.float32)), rtol=1e-5, atol=1e-7)
  # bf16 cosines are off by up to ~4e-3, i.e. ~0.08 in scores / eps: assignments within 0.05.
  np.testing.assert_allclose(q, sinkhorn(s), rtol=0, atol=5e-2)


@HYP
@given(s=hnp.arrays(np.float32, (7, 4), elements=st.floats(-1, 1, width=32)),
       col=hnp.arrays(np.float32, (1, 4), elements=st.floats(-1, 1, width=32)))
def test_sinkhorn_properties(s, col):
  q = np.asarray(sinkhorn(s))
  assert np.all(np.isfinite(q)) and np.all(q >= 0)
  np.testing.assert_allclose(q.sum(axis=1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(q, ref_sinkhorn(s), rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(sinkhorn(s + col), q, rtol=1e-3, atol=1e-5)


def test_sinkhorn_bad_input():
  _assert_raises_naming(lambda x: losses.sinkhorn(x), (np.zeros((2, 4, 3), np.float32),), 'scores')
  _assert_raises_naming(lambda x: losses.sinkhorn(x), (np.zeros((4,), np.float32),), 'scores')


# ----------------------------------------------------------------------------- SwAV

@pytest.mark.parametrize('seed,v,n,k', [(0, 2, 9, 5), (1, 4, 16, 10), (2, 3, 7, 13)])
def test_swav_default_matches_reference(seed, v, n, k):
  s = np.stack([_cosine_scores(seed * 10 + i, n, k) for i in range(v)])
  loss = swav(s)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, ref_swav(s), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('assign', [(0,), (3, 0, 2)])
def test_swav_options_match_reference(assign):
  s = np.stack([_cosine_scores(40 + i, 16, 10) for i in range(4)])
  kw = dict(temperature=0.2, epsilon=0.03, n_iters=5, assign_crops=assign)
  np.testing.assert_allclose(swav(s, **kw), ref_swav(s, **kw), rtol=RTOL, atol=ATOL)


def test_swav_gradient_does_not_flow_through_codes():
  s = np.stack([_cosine_scores(50 + i, 9, 5) for i in range(2)] + [_cosine_scores(52, 9, 5)])
  g = np.asarray(swav_grad(s, 0.05))
  codes = {a: ref_sinkhorn(s[a]) for a in (0, 1)}
  coords = _coords(51, s.shape, count=8) + [(0, 0, 0), (1, 3, 2), (2, 7, 4)]
  fixed = _fd_grad(lambda x: ref_swav(x, codes=codes), s, coords)
  np.testing.assert_allclose([g[c] for c in coords], fixed, rtol=1e-3, atol=1e-5)
  # Differentiating through the codes would give another gradient (the test can tell).
  through = _fd_grad(lambda x: ref_swav(x), s, coords)
  assert np.max(np.abs(through - fixed)) > 1e-2
  # Every coordinate, not only the sampled ones: the gradient of the loss with the codes fed in
  # as constants (float64, analytic: softmax - q per crop pair, over N and the pairs).
  p = np.exp(_log_softmax(s.astype(np.float64) / 0.1))
  want = np.zeros_like(p)
  for a in (0, 1):
    for w in (x for x in range(3) if x != a):
      want[w] += (p[w] - codes[a]) / 0.1 / 9 / 2 / 2
  np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-6)


def test_swav_jit_bf16_and_finite_gradient_at_small_epsilon():
  s = np.stack([_cosine_scores(60 + i, 9, 5) for i in range(2)])
  np.testing.assert_allclose(swav(s), losses.swav_loss(s), rtol=1e-6)
  s3 = np.stack([_cosine_scores(62 + i, 9, 5) for i in range(3)])
  assert np.all(np.isfinite(swav_grad(s3 * 50, 0.01)))
  assert np.all(np.isfinite(swav_grad(s3, 0.01)))
  b = jnp.asarray(s, jnp.bfloat16)
  loss = swav(b)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, swav(np.asarray(b, np.float32)), rtol=1e-5)
  np.testing.assert_allclose(loss, swav(s), rtol=2e-2)


@HYP
@given(s=hnp.arrays(np.float32, (3, 6, 4), elements=st.floats(-1, 1, width=32)),
       perm_seed=st.integers(0, 2**16))
def test_swav_properties(s, perm_seed):
  loss = float(swav(s))
  assert np.isfinite(loss) and loss >= 0
  perm = np.random.default_rng(perm_seed).permutation(6)
  np.testing.assert_allclose(swav(s[:, perm]), loss, rtol=1e-5, atol=1e-5)  # batch order
  np.testing.assert_allclose(loss, ref_swav(s), rtol=1e-4, atol=1e-5)


def test_swav_bad_input():
  s = np.zeros((2, 8, 4), np.float32)
  _assert_raises_naming(lambda x: losses.swav_loss(x), (np.zeros((8, 4), np.float32),), 'scores')
  _assert_raises_naming(lambda x: losses.swav_loss(x, assign_crops=(0, 2)), (s,), 'assign_crops')
  _assert_raises_naming(lambda x: losses.swav_loss(x, assign_crops=(-1,)), (s,), 'assign_crops')
