"""Tests of jssl.losses.contrastive (info_nce, nt_xent, moco_loss, nearest_neighbors).

References are written from docs/losses.md in float64 NumPy, one row at a time (explicit sums
over the denominators), independently of the library's matrix formulation. Jitted wrappers with
the temperature traced are shared between tests to keep compilations few.
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
ERRORS = (AssertionError, ValueError, TypeError)
# bf16 inputs: the loss must stay within this relative distance of the float32-input loss
# (bf16 rounds each input to ~4e-3 relative; cosines move by about that much, logits by that
# over the temperature, and the mean cross-entropy by a few 1e-3 relative at T = 0.1).
BF16_RTOL = 2e-2

info_nce_jit = jax.jit(losses.info_nce)
nt_xent_jit = jax.jit(losses.nt_xent)
moco_jit = jax.jit(losses.moco_loss)
nn_jit = jax.jit(losses.nearest_neighbors, static_argnames=('k',))


# ------------------------------------------------------------------------------------- helpers

def normalize64(v):
  """v / max(||v||_2, 1e-12) in float64."""
  v = np.asarray(v, np.float64)
  return v / max(float(np.linalg.norm(v)), 1e-12)


def cos64(a, b):
  """cos(a, b) = normalize(a) . normalize(b) in float64."""
  return float(np.dot(normalize64(a), normalize64(b)))


def neg_log_softmax(logits, idx):
  """-log softmax(logits)[idx] in float64, stable."""
  logits = np.asarray(logits, np.float64)
  mx = logits.max()
  return float(mx + np.log(np.sum(np.exp(logits - mx))) - logits[idx])


def info_nce_ref(q, k, negs=None, temperature=0.1):
  """mean_i -log softmax([cos(q_i, k_j)/T]_j ++ [cos(q_i, n_m)/T]_m)[i]."""
  n = len(q)
  total = 0.0
  for i in range(n):
    logits = [cos64(q[i], k[j]) / temperature for j in range(n)]
    if negs is not None:
      logits += [cos64(q[i], m) / temperature for m in negs]
    total += neg_log_softmax(logits, i)
  return total / n


def nt_xent_ref(z1, z2, temperature=0.1):
  """SimCLR: mean over 2N views of -log(exp(s_i,pos) / sum_{k != i} exp(s_ik)), explicit sums."""
  z = np.concatenate([np.asarray(z1, np.float64), np.asarray(z2, np.float64)])
  n2 = len(z)
  n = n2 // 2
  total = 0.0
  for i in range(n2):
    pos = i + n if i < n else i - n
    denom = sum(np.exp(cos64(z[i], z[k]) / temperature) for k in range(n2) if k != i)
    total += -np.log(np.exp(cos64(z[i], z[pos]) / temperature) / denom)
  return total / n2


def moco_ref(q, k, queue, temperature=0.2):
  """mean_i -log softmax([cos(q_i, k_i)/T] ++ [cos(q_i, n_m)/T]_m)[0]."""
  total = 0.0
  for i in range(len(q)):
    logits = [cos64(q[i], k[i]) / temperature] + [cos64(q[i], m) / temperature for m in queue]
    total += neg_log_softmax(logits, 0)
  return total / len(q)


def nn_ref_indices(z, support, k):
  """Indices of the k support rows of highest cosine to each z row, nearest first; also the
  smallest gap between consecutive sorted similarities among the first k+1 (to rule out ties)."""
  idx, gaps = [], []
  for row in z:
    sims = np.array([cos64(row, s) for s in support])
    order = np.argsort(-sims, kind='stable')
    idx.append(order[:k])
    top = sims[order[:k + 1]]
    gaps.append(np.min(-np.diff(top)) if len(top) > 1 else np.inf)
  return np.array(idx), float(np.min(gaps))


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


def row_scales(rng, n):
  """Positive per-row factors spanning three decades, as a column."""
  return (10.0 ** rng.uniform(-1.5, 1.5, size=(n, 1))).astype(np.float32)


def assert_f32_scalar(x):
  """The loss is a float32 scalar."""
  assert jnp.shape(x) == ()
  assert x.dtype == jnp.float32


def assert_names(exc_info, name):
  """The error message names the argument at fault (as a whole word)."""
  msg = str(exc_info.value)
  assert re.search(rf'\b{re.escape(name)}\b', msg), msg


def assert_finite(tree):
  """Every leaf is finite."""
  for leaf in jax.tree_util.tree_leaves(tree):
    assert np.all(np.isfinite(np.asarray(leaf)))


def rows(rng, *shape):
  """Gaussian float32 array."""
  return rng.normal(size=shape).astype(np.float32)


# (N, D, M) with M = None for no extra negatives: odd sizes N = 1..7, D = 3..33.
SWEEP = [(1, 3, None), (2, 5, 1), (3, 4, None), (5, 7, 11), (7, 33, None)]
TEMPS = (0.1, 0.5, 0.07)
hyp_rows = hnp.arrays(np.float32, (3, 4), elements=st.integers(-12, 12).map(lambda v: v / 4))
pow2_scales = hnp.arrays(np.float32, (3, 1), elements=st.sampled_from([2.0 ** e for e in
                                                                       range(-6, 7)]))


# ------------------------------------------------------------------------------------ info_nce

@pytest.mark.parametrize('n,d,m', SWEEP)
def test_info_nce_matches_reference(n, d, m):
  rng = np.random.default_rng(10 * n + d)
  for t in TEMPS:
    q, k = rows(rng, n, d), rows(rng, n, d)
    negs = None if m is None else rows(rng, m, d)
    got = info_nce_jit(q, k, negs, temperature=t)
    assert_f32_scalar(got)
    np.testing.assert_allclose(float(got), info_nce_ref(q, k, negs, t), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('n,d,m', [(5, 7, 11), (7, 33, None)])
def test_info_nce_invariances(n, d, m):
  """Positive per-row rescaling of any input and a joint row permutation change nothing."""
  rng = np.random.default_rng(1)
  q, k = rows(rng, n, d), rows(rng, n, d)
  negs = None if m is None else rows(rng, m, d)
  base = float(info_nce_jit(q, k, negs, temperature=0.1))
  scaled_negs = None if m is None else negs * row_scales(rng, m)
  scaled = info_nce_jit(q * row_scales(rng, n), k * row_scales(rng, n), scaled_negs,
                        temperature=0.1)
  np.testing.assert_allclose(float(scaled), base, rtol=1e-5, atol=1e-5)
  perm = rng.permutation(n)
  perm_negs = None if m is None else negs[rng.permutation(m)]
  np.testing.assert_allclose(float(info_nce_jit(q[perm], k[perm], perm_negs, temperature=0.1)),
                             base, rtol=1e-5, atol=1e-5)
  # Swapping two keys (without their queries) changes which key is positive: the loss moves.
  k2 = k.copy()
  k2[[0, 1]] = k2[[1, 0]]
  assert abs(float(info_nce_jit(q, k2, negs, temperature=0.1)) - base) > 1e-3


def test_info_nce_hand_value_and_extra_negatives():
  """Orthonormal q = k (up to scale): the positive logit is 1/T, every other one 0, so
  loss = log(1 + (N - 1 + M) e^{-1/T}) with M extra negatives orthogonal to every query
  (all-zero negatives count too: cos(q, 0) = 0)."""
  t = 0.5
  eye = np.eye(33, dtype=np.float32)
  q, k = eye[:7] * 3.0, eye[:7] * 0.2
  want = np.log1p(6 * np.exp(-1 / t))
  np.testing.assert_allclose(float(info_nce_jit(q, k, None, temperature=t)), want, rtol=1e-5)
  eye = np.eye(7, dtype=np.float32)
  q, k = eye[:5] * 3.0, eye[:5] * 0.2
  negs = np.zeros((11, 7), np.float32)
  negs[0], negs[1] = eye[5], -eye[6]
  want = np.log1p((4 + 11) * np.exp(-1 / t))
  np.testing.assert_allclose(float(info_nce_jit(q, k, negs, temperature=t)), want, rtol=1e-5)
  # N = 1 without negatives: the positive is the only logit.
  np.testing.assert_allclose(float(info_nce_jit(q[:1, :3], k[:1, :3], None, temperature=t)), 0.0,
                             atol=1e-6)


def test_info_nce_jit_equals_eager():
  rng = np.random.default_rng(2)
  q, k, negs = rows(rng, 5, 7), rows(rng, 5, 7), rows(rng, 11, 7)
  eager = losses.info_nce(q, k, negs, temperature=0.1)
  assert_f32_scalar(eager)
  np.testing.assert_allclose(float(info_nce_jit(q, k, negs, temperature=0.1)), float(eager),
                             rtol=1e-6)


def test_info_nce_grad():
  """Gradient w.r.t. query, keys, negatives equals float64 central differences of the reference;
  finite with an all-zero row in every input."""
  rng = np.random.default_rng(3)
  q, k, negs = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(2, 4))
  f = jax.jit(jax.value_and_grad(lambda a, b, c, t: losses.info_nce(a, b, c, temperature=t),
                                 argnums=(0, 1, 2)))
  for t in (0.5, 0.1):
    _, grads = f(q.astype(np.float32), k.astype(np.float32), negs.astype(np.float32), t)
    refs = (num_grad(lambda v: info_nce_ref(v, k, negs, t), q),
            num_grad(lambda v: info_nce_ref(q, v, negs, t), k),
            num_grad(lambda v: info_nce_ref(q, k, v, t), negs))
    for got, ref in zip(grads, refs):
      np.testing.assert_allclose(np.asarray(got), ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())
  qz, kz, nz = (x.astype(np.float32) for x in (q, k, negs))
  qz[0], kz[1], nz[0] = 0.0, 0.0, 0.0
  loss, grads = f(qz, kz, nz, 0.1)
  np.testing.assert_allclose(float(loss), info_nce_ref(qz, kz, nz, 0.1), rtol=1e-5)
  assert_finite(grads)


def test_info_nce_bf16():
  rng = np.random.default_rng(4)
  q, k, negs = rows(rng, 5, 7), rows(rng, 5, 7), rows(rng, 11, 7)
  b = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, negs)]
  got = info_nce_jit(*b, temperature=0.1)
  assert_f32_scalar(got)
  rounded = [np.asarray(x, np.float32) for x in b]
  np.testing.assert_allclose(float(got), info_nce_ref(*rounded, 0.1), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(got), float(info_nce_jit(q, k, negs, temperature=0.1)),
                             rtol=BF16_RTOL)


@HYP
@hypothesis.given(q=hyp_rows, k=hyp_rows, s1=pow2_scales, s2=pow2_scales)
def test_info_nce_property(q, k, s1, s2):
  """0 <= loss <= log(N) + 2/T, and exact invariance under power-of-two per-row scales."""
  got = float(info_nce_jit(q, k, None, temperature=0.5))
  assert -1e-6 <= got <= np.log(3) + 2 / 0.5 + 1e-5
  np.testing.assert_allclose(float(info_nce_jit(q * s1, k * s2, None, temperature=0.5)), got,
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('use_jit', [False, True])
@pytest.mark.parametrize('shapes,name', [
    (((4,), (4,), None), 'query'),
    (((4, 3), (5, 3), None), 'keys'),
    (((4, 3), (4, 2), None), 'keys'),
    (((4, 3), (4, 3), (6,)), 'negatives'),
    (((4, 3), (4, 3), (6, 2)), 'negatives'),
])
def test_info_nce_bad_input_names_argument(shapes, name, use_jit):
  arrays = [None if s is None else np.ones(s, np.float32) for s in shapes]
  f = jax.jit(losses.info_nce) if use_jit else losses.info_nce
  with pytest.raises(ERRORS) as exc:
    f(*arrays)
  assert_names(exc, name)


# ------------------------------------------------------------------------------------- nt_xent

@pytest.mark.parametrize('n,d', [(1, 3), (2, 5), (3, 4), (5, 7), (7, 33)])
def test_nt_xent_matches_reference(n, d):
  rng = np.random.default_rng(20 * n + d)
  for t in TEMPS:
    z1, z2 = rows(rng, n, d), rows(rng, n, d)
    got = nt_xent_jit(z1, z2, temperature=t)
    assert_f32_scalar(got)
    np.testing.assert_allclose(float(got), nt_xent_ref(z1, z2, t), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('n,d', [(5, 7), (7, 33)])
def test_nt_xent_invariances(n, d):
  """Symmetric in (z1, z2); unchanged by positive per-row scales and a joint row permutation."""
  rng = np.random.default_rng(5)
  z1, z2 = rows(rng, n, d), rows(rng, n, d)
  base = float(nt_xent_jit(z1, z2, temperature=0.1))
  np.testing.assert_allclose(float(nt_xent_jit(z2, z1, temperature=0.1)), base, rtol=1e-5,
                             atol=1e-5)
  scaled = nt_xent_jit(z1 * row_scales(rng, n), z2 * row_scales(rng, n), temperature=0.1)
  np.testing.assert_allclose(float(scaled), base, rtol=1e-5, atol=1e-5)
  perm = rng.permutation(n)
  np.testing.assert_allclose(float(nt_xent_jit(z1[perm], z2[perm], temperature=0.1)), base,
                             rtol=1e-5, atol=1e-5)
  # Permuting only z2 breaks the pairing: the loss moves.
  assert abs(float(nt_xent_jit(z1, z2[np.roll(np.arange(n), 1)], temperature=0.1)) - base) > 1e-3


def test_nt_xent_hand_values():
  """Self-similarity is excluded from the denominator: N = 1 gives exactly 0 whatever the views;
  orthonormal z1 = z2 gives log(1 + 2 (N - 1) e^{-1/T}) (2N - 2 negatives of cosine 0)."""
  rng = np.random.default_rng(6)
  np.testing.assert_allclose(float(nt_xent_jit(rows(rng, 1, 3), rows(rng, 1, 3),
                                               temperature=0.1)), 0.0, atol=1e-6)
  n, t = 5, 0.5
  eye = np.eye(7, dtype=np.float32)[:n]
  want = np.log1p(2 * (n - 1) * np.exp(-1 / t))
  np.testing.assert_allclose(float(nt_xent_jit(eye, 2.0 * eye, temperature=t)), want, rtol=1e-5)
  # Keeping the self term exp(s_ii) = e^{1/T} in the denominator would give
  # log(2 + 2 (N - 1) e^{-1/T}) instead: assert we are far from it.
  wrong = np.log1p(2 * (n - 1) * np.exp(-1 / t) + 1.0)
  assert abs(float(nt_xent_jit(eye, 2.0 * eye, temperature=t)) - wrong) > 0.1


def test_nt_xent_jit_equals_eager():
  rng = np.random.default_rng(7)
  z1, z2 = rows(rng, 5, 7), rows(rng, 5, 7)
  eager = losses.nt_xent(z1, z2, temperature=0.1)
  assert_f32_scalar(eager)
  np.testing.assert_allclose(float(nt_xent_jit(z1, z2, temperature=0.1)), float(eager),
                             rtol=1e-6)


def test_nt_xent_grad():
  """Gradient equals float64 central differences; finite with an all-zero row in z1 and z2."""
  rng = np.random.default_rng(8)
  z1, z2 = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
  f = jax.jit(jax.value_and_grad(lambda a, b, t: losses.nt_xent(a, b, temperature=t),
                                 argnums=(0, 1)))
  for t in (0.5, 0.1):
    _, grads = f(z1.astype(np.float32), z2.astype(np.float32), t)
    refs = (num_grad(lambda v: nt_xent_ref(v, z2, t), z1),
            num_grad(lambda v: nt_xent_ref(z1, v, t), z2))
    for got, ref in zip(grads, refs):
      np.testing.assert_allclose(np.asarray(got), ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())
  a, b = z1.astype(np.float32), z2.astype(np.float32)
  a[1], b[2] = 0.0, 0.0
  loss, grads = f(a, b, 0.1)
  np.testing.assert_allclose(float(loss), nt_xent_ref(a, b, 0.1), rtol=1e-5)
  assert_finite(grads)
  # Identical inputs: cosine exactly 1 everywhere on the diagonal, still finite.
  loss, grads = f(a, a, 0.1)
  assert np.isfinite(float(loss))
  assert_finite(grads)


def test_nt_xent_bf16():
  rng = np.random.default_rng(9)
  z1, z2 = rows(rng, 7, 33), rows(rng, 7, 33)
  b1, b2 = jnp.asarray(z1, jnp.bfloat16), jnp.asarray(z2, jnp.bfloat16)
  got = nt_xent_jit(b1, b2, temperature=0.1)
  assert_f32_scalar(got)
  np.testing.assert_allclose(float(got), nt_xent_ref(np.asarray(b1, np.float32),
                                                     np.asarray(b2, np.float32), 0.1),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(got), float(nt_xent_jit(z1, z2, temperature=0.1)),
                             rtol=BF16_RTOL)


@HYP
@hypothesis.given(z1=hyp_rows, z2=hyp_rows, s1=pow2_scales, s2=pow2_scales)
def test_nt_xent_property(z1, z2, s1, s2):
  """loss >= 0, symmetric, exactly invariant under power-of-two per-row scales."""
  got = float(nt_xent_jit(z1, z2, temperature=0.5))
  assert got >= -1e-6
  np.testing.assert_allclose(float(nt_xent_jit(z2, z1, temperature=0.5)), got, rtol=1e-5,
                             atol=1e-6)
  np.testing.assert_allclose(float(nt_xent_jit(z1 * s1, z2 * s2, temperature=0.5)), got,
                             rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('use_jit', [False, True])
@pytest.mark.parametrize('shapes,name', [
    (((4, 3, 2), (4, 3, 2)), 'z1'),
    (((4, 3), (4, 5)), 'z2'),
    (((4, 3), (3, 3)), 'z2'),
])
def test_nt_xent_bad_input_names_argument(shapes, name, use_jit):
  arrays = [np.ones(s, np.float32) for s in shapes]
  f = jax.jit(losses.nt_xent) if use_jit else losses.nt_xent
  with pytest.raises(ERRORS) as exc:
    f(*arrays)
  assert_names(exc, name)


# ----------------------------------------------------------------------------------- moco_loss

@pytest.mark.parametrize('n,d,m', [(1, 3, 1), (2, 5, 6), (3, 4, 3), (5, 7, 11), (7, 33, 4)])
def test_moco_matches_reference(n, d, m):
  rng = np.random.default_rng(30 * n + d)
  for t in (0.2, 0.07, 1.0):
    q, k, queue = rows(rng, n, d), rows(rng, n, d), rows(rng, m, d)
    got = moco_jit(q, k, queue, temperature=t)
    assert_f32_scalar(got)
    np.testing.assert_allclose(float(got), moco_ref(q, k, queue, t), rtol=1e-5, atol=1e-5)


def test_moco_no_in_batch_negatives():
  """The loss is the mean of per-row losses (no in-batch negatives), each of which is info_nce
  of a one-row batch with the queue as extra negatives; invariant to positive row scales."""
  rng = np.random.default_rng(11)
  n, d, m = 5, 7, 11
  q, k, queue = rows(rng, n, d), rows(rng, n, d), rows(rng, m, d)
  base = float(moco_jit(q, k, queue, temperature=0.2))
  per_row = [float(moco_jit(q[i:i + 1], k[i:i + 1], queue, temperature=0.2)) for i in range(n)]
  np.testing.assert_allclose(base, np.mean(per_row), rtol=1e-5)
  one = float(info_nce_jit(q[:1], k[:1], queue, temperature=0.2))
  np.testing.assert_allclose(per_row[0], one, rtol=1e-5)
  # Replacing the other rows' keys leaves row 0's term unchanged.
  k2 = k.copy()
  k2[1:] = rows(rng, n - 1, d)
  per_row2 = float(moco_jit(q, k2, queue, temperature=0.2)) * n - sum(
      float(moco_jit(q[i:i + 1], k2[i:i + 1], queue, temperature=0.2)) for i in range(1, n))
  np.testing.assert_allclose(per_row2, per_row[0], rtol=1e-4)
  scaled = moco_jit(q * row_scales(rng, n), k * row_scales(rng, n), queue * row_scales(rng, m),
                    temperature=0.2)
  np.testing.assert_allclose(float(scaled), base, rtol=1e-5, atol=1e-5)
  # Permuting the queue changes nothing.
  np.testing.assert_allclose(float(moco_jit(q, k, queue[::-1], temperature=0.2)), base,
                             rtol=1e-5, atol=1e-5)


def test_moco_jit_equals_eager_grad_finite():
  rng = np.random.default_rng(12)
  q, k, queue = rows(rng, 5, 7), rows(rng, 5, 7), rows(rng, 11, 7)
  eager = losses.moco_loss(q, k, queue, temperature=0.2)
  assert_f32_scalar(eager)
  np.testing.assert_allclose(float(moco_jit(q, k, queue, temperature=0.2)), float(eager),
                             rtol=1e-6)
  f = jax.jit(jax.value_and_grad(lambda a, b, c: losses.moco_loss(a, b, c, temperature=0.2),
                                 argnums=(0, 1, 2)))
  _, (gq, _, _) = f(q, k, queue)
  ref = num_grad(lambda v: moco_ref(v, k, queue, 0.2), q)
  np.testing.assert_allclose(np.asarray(gq), ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())
  q[0], k[1], queue[2] = 0.0, 0.0, 0.0
  loss, grads = f(q, k, queue)
  np.testing.assert_allclose(float(loss), moco_ref(q, k, queue, 0.2), rtol=1e-5)
  assert_finite(grads)


def test_moco_bf16():
  rng = np.random.default_rng(13)
  q, k, queue = rows(rng, 7, 33), rows(rng, 7, 33), rows(rng, 4, 33)
  b = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, queue)]
  got = moco_jit(*b, temperature=0.2)
  assert_f32_scalar(got)
  rounded = [np.asarray(x, np.float32) for x in b]
  np.testing.assert_allclose(float(got), moco_ref(*rounded, 0.2), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(got), float(moco_jit(q, k, queue, temperature=0.2)),
                             rtol=BF16_RTOL)


@HYP
@hypothesis.given(q=hyp_rows, k=hyp_rows, queue=hyp_rows, s=pow2_scales)
def test_moco_property(q, k, queue, s):
  """0 <= loss <= log(1 + M) + 2/T; power-of-two row scales of the queue change nothing."""
  got = float(moco_jit(q, k, queue, temperature=0.5))
  assert -1e-6 <= got <= np.log(4) + 2 / 0.5 + 1e-5
  np.testing.assert_allclose(float(moco_jit(q, k, queue * s, temperature=0.5)), got, rtol=1e-6,
                             atol=1e-6)


@pytest.mark.parametrize('use_jit', [False, True])
@pytest.mark.parametrize('shapes,name', [
    (((4,), (4,), (6, 4)), 'query'),
    (((4, 3), (4, 2), (6, 3)), 'key'),
    (((4, 3), (2, 3), (6, 3)), 'key'),
    (((4, 3), (4, 3), (6,)), 'queue'),
    (((4, 3), (4, 3), (6, 5)), 'queue'),
])
def test_moco_bad_input_names_argument(shapes, name, use_jit):
  arrays = [np.ones(s, np.float32) for s in shapes]
  f = jax.jit(losses.moco_loss) if use_jit else losses.moco_loss
  with pytest.raises(ERRORS) as exc:
    f(*arrays)
  assert_names(exc, name)


# --------------------------------------------------------------------------- nearest_neighbors

def as_nkd(out, n, k, d):
  """k = 1 may return [N, D]; view every result as [N, k, D]."""
  out = np.asarray(out, np.float32)
  if k == 1 and out.shape == (n, d):
    out = out[:, None, :]
  assert out.shape == (n, k, d)
  return out


@pytest.mark.parametrize('n,d,m,k', [(1, 3, 4, 1), (3, 4, 6, 2), (5, 7, 9, 1), (5, 7, 9, 3),
                                     (7, 33, 5, 5)])
def test_nearest_neighbors_matches_reference(n, d, m, k):
  """Exact support rows (as stored, not normalized), nearest first, shape [N, k, D]."""
  rng = np.random.default_rng(40 * n + m + k)
  z = rows(rng, n, d)
  support = rows(rng, m, d) * row_scales(rng, m)
  idx, gap = nn_ref_indices(z, support, k)
  assert gap > 1e-4  # precondition: no near-ties in this draw
  out = nn_jit(z, support, k=k)
  if k > 1:
    assert out.shape == (n, k, d)
  np.testing.assert_array_equal(as_nkd(out, n, k, d), support[idx])
  # Positive row scales of z change nothing.
  out2 = nn_jit(z * row_scales(rng, n), support, k=k)
  np.testing.assert_array_equal(np.asarray(out2), np.asarray(out))


def test_nearest_neighbors_finds_planted_positive_multiple():
  """A support holding 0.01 * z_i among large random rows returns exactly that row."""
  rng = np.random.default_rng(14)
  z = rows(rng, 5, 7)
  support = np.concatenate([rows(rng, 4, 7) * 100.0, 0.01 * z[::-1]])
  out = as_nkd(nn_jit(z, support, k=1), 5, 1, 7)[:, 0]
  np.testing.assert_array_equal(out, support[4:][::-1])


def test_nearest_neighbors_jit_eager_and_no_gradient():
  rng = np.random.default_rng(15)
  z, support = rows(rng, 5, 7), rows(rng, 11, 7)
  eager = losses.nearest_neighbors(z, support, k=2)
  np.testing.assert_array_equal(np.asarray(eager), np.asarray(nn_jit(z, support, k=2)))
  # Gradient-free, also inside the NNCLR composition info_nce(nearest_neighbors(z1, S), p2),
  # where only p2 gets a gradient.
  w = rows(rng, 5, 2, 7)

  def f(a, b, p2):
    return (jnp.sum(losses.nearest_neighbors(a, b, k=2) * w)
            + losses.info_nce(losses.nearest_neighbors(a, b, k=1), p2))

  gz, gs, gp = jax.jit(jax.grad(f, argnums=(0, 1, 2)))(z, support, rows(rng, 5, 7))
  np.testing.assert_array_equal(np.asarray(gz), 0.0)
  np.testing.assert_array_equal(np.asarray(gs), 0.0)
  assert np.abs(np.asarray(gp)).max() > 1e-3


def test_nearest_neighbors_bf16_returns_support_rows():
  rng = np.random.default_rng(16)
  z, support = rows(rng, 5, 7), rows(rng, 9, 7)
  zb, sb = jnp.asarray(z, jnp.bfloat16), jnp.asarray(support, jnp.bfloat16)
  idx, gap = nn_ref_indices(np.asarray(zb, np.float32), np.asarray(sb, np.float32), 3)
  assert gap > 1e-4
  out = nn_jit(zb, sb, k=3)
  np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(sb, np.float32)[idx])


@pytest.mark.parametrize('use_jit', [False, True])
@pytest.mark.parametrize('shapes,k,name', [
    (((4,), (6, 4)), 1, 'z'),
    (((4, 3), (6,)), 1, 'support'),
    (((4, 3), (6, 5)), 1, 'support'),
    (((4, 3), (6, 3)), 0, 'k'),
    (((4, 3), (6, 3)), 7, 'k'),
])
def test_nearest_neighbors_bad_input_names_argument(shapes, k, name, use_jit):
  arrays = [np.ones(s, np.float32) for s in shapes]
  f = functools.partial(losses.nearest_neighbors, k=k)
  if use_jit:
    f = jax.jit(f)
  with pytest.raises(ERRORS) as exc:
    f(*arrays)
  assert_names(exc, name)
