"""Tests of jssl.losses.distillation (byol_loss, simsiam_loss, mean_shift_loss, dino_loss,
dino_center) against docs/losses.md.

References are written from docs/losses.md in float64 NumPy, one row (and one crop pair) at a
time. Jitted wrappers with temperatures / momentum traced are shared between tests.
"""

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
# bf16 inputs against float32 inputs, relative: cosine losses move by ~ the bf16 rounding
# (4e-3 relative per input), so 2e-2 is loose enough and still catches a bf16 reduction.
BF16_RTOL = 2e-2
# DINO divides the teacher logits by 0.04: bf16 rounding of O(1) logits moves the sharpened
# targets by a few percent; 5e-2 relative is what we accept there.
DINO_BF16_RTOL = 5e-2

byol_jit = jax.jit(losses.byol_loss)
simsiam_jit = jax.jit(losses.simsiam_loss)
ms_jit = jax.jit(losses.mean_shift_loss, static_argnames=('k',))
center_jit = jax.jit(losses.dino_center)
_dino_jit = jax.jit(losses.dino_loss)


def dino_jit(student, teacher, center, student_temp=0.1, teacher_temp=0.04):
  """Jitted dino_loss, temperatures always passed (traced) so that one compile serves all."""
  return _dino_jit(student, teacher, center, student_temp=student_temp,
                   teacher_temp=teacher_temp)


# ------------------------------------------------------------------------------------- helpers

def normalize64(v):
  """v / max(||v||_2, 1e-12) in float64."""
  v = np.asarray(v, np.float64)
  return v / max(float(np.linalg.norm(v)), 1e-12)


def cos64(a, b):
  """cos(a, b) in float64."""
  return float(np.dot(normalize64(a), normalize64(b)))


def sqdist_unit(a, b):
  """||normalize(a) - normalize(b)||^2 in float64."""
  d = normalize64(a) - normalize64(b)
  return float(np.dot(d, d))


def byol_ref(p, z):
  """mean_i ||normalize(p_i) - normalize(z_i)||^2."""
  return float(np.mean([sqdist_unit(p[i], z[i]) for i in range(len(p))]))


def simsiam_ref(p, z):
  """-mean_i cos(p_i, z_i)."""
  return -float(np.mean([cos64(p[i], z[i]) for i in range(len(p))]))


def mean_shift_ref(p, z, bank, k):
  """Candidates {z_i} + bank; the k nearest to z_i by cosine, z_i first; mean squared distance of
  normalize(p_i) to each, mean over rows."""
  total = 0.0
  for i in range(len(p)):
    cands = [z[i]] + list(bank)
    sims = np.array([cos64(z[i], c) for c in cands])
    sims[0] = np.inf  # z_i is always first
    nn = np.argsort(-sims, kind='stable')[:k]
    total += np.mean([sqdist_unit(p[i], cands[j]) for j in nn])
  return total / len(p)


def softmax64(x):
  """Softmax of a float64 vector."""
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max())
  return e / e.sum()


def dino_ref(student, teacher, center, student_temp=0.1, teacher_temp=0.04):
  """Mean over pairs (t, s), s != t, of mean_i -sum_k q_t[i, k] log p_s[i, k], loop by loop."""
  s_n, n, _ = student.shape
  t_n = teacher.shape[0]
  c = np.asarray(center, np.float64).reshape(-1)
  pair_losses = []
  for t in range(t_n):
    for s in range(s_n):
      if s == t:
        continue
      rows = []
      for i in range(n):
        q = softmax64((np.asarray(teacher[t, i], np.float64) - c) / teacher_temp)
        logp = np.log(softmax64(np.asarray(student[s, i], np.float64) / student_temp))
        rows.append(-np.sum(q * logp))
      pair_losses.append(np.mean(rows))
  return float(np.mean(pair_losses))


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


def rows(rng, *shape):
  """Gaussian float32 array."""
  return rng.normal(size=shape).astype(np.float32)


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


def raises_naming(f, args, name):
  """f(*args) raises at trace time, eagerly and under jit, naming `name`."""
  for g in (f, jax.jit(f)):
    with pytest.raises(ERRORS) as exc:
      g(*args)
    assert_names(exc, name)


SHAPES = [(1, 3), (2, 5), (3, 4), (5, 7), (7, 33)]
hyp_rows = hnp.arrays(np.float32, (3, 4), elements=st.integers(-12, 12).map(lambda v: v / 4))


@jax.jit
def self_distill_grads(p, z, bank):
  """Values and gradients of byol, simsiam and mean_shift(k=3) w.r.t. all their inputs."""
  vg = lambda f, n: jax.value_and_grad(f, argnums=tuple(range(n)))
  return (vg(losses.byol_loss, 2)(p, z), vg(losses.simsiam_loss, 2)(p, z),
          vg(lambda a, b, c: losses.mean_shift_loss(a, b, c, k=3), 3)(p, z, bank))


# ---------------------------------------------------------------------------- byol and simsiam

@pytest.mark.parametrize('n,d', SHAPES)
def test_byol_simsiam_match_reference(n, d):
  rng = np.random.default_rng(10 * n + d)
  for _ in range(3):
    p, z = rows(rng, n, d), rows(rng, n, d) * row_scales(rng, n)
    b, s = byol_jit(p, z), simsiam_jit(p, z)
    assert_f32_scalar(b)
    assert_f32_scalar(s)
    np.testing.assert_allclose(float(b), byol_ref(p, z), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(s), simsiam_ref(p, z), rtol=1e-5, atol=1e-5)
    # byol = mean(2 - 2 cos) = 2 + 2 simsiam for non-zero rows.
    np.testing.assert_allclose(float(b), 2.0 + 2.0 * float(s), rtol=1e-5, atol=1e-5)


def test_byol_simsiam_extremes_and_scale_invariance():
  rng = np.random.default_rng(1)
  z = rows(rng, 5, 7)
  c = row_scales(rng, 5)
  np.testing.assert_allclose(float(byol_jit(c * z, z)), 0.0, atol=1e-6)
  np.testing.assert_allclose(float(byol_jit(-c * z, z)), 4.0, rtol=1e-6)
  np.testing.assert_allclose(float(simsiam_jit(z, z)), -1.0, rtol=1e-6)
  np.testing.assert_allclose(float(simsiam_jit(c * z, z)), -1.0, rtol=1e-6)
  np.testing.assert_allclose(float(simsiam_jit(-c * z, z)), 1.0, rtol=1e-6)
  p = rows(rng, 5, 7)
  for f in (byol_jit, simsiam_jit):
    np.testing.assert_allclose(float(f(p * row_scales(rng, 5), z * row_scales(rng, 5))),
                               float(f(p, z)), rtol=1e-5, atol=1e-6)


def test_byol_simsiam_jit_equals_eager():
  rng = np.random.default_rng(2)
  p, z = rows(rng, 5, 7), rows(rng, 5, 7)
  for eager_f, jit_f in ((losses.byol_loss, byol_jit), (losses.simsiam_loss, simsiam_jit)):
    eager = eager_f(p, z)
    assert_f32_scalar(eager)
    np.testing.assert_allclose(float(jit_f(p, z)), float(eager), rtol=1e-6)


def test_self_distillation_grads():
  """byol / simsiam / mean_shift: gradient w.r.t. p equals float64 central differences, no
  gradient reaches z or the bank (sg), and everything stays finite with all-zero rows."""
  rng = np.random.default_rng(3)
  p, z, bank = rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), rng.normal(size=(6, 4))
  f32 = lambda *xs: [x.astype(np.float32) for x in xs]
  (bv, bg), (sv, sgr), (mv, mg) = self_distill_grads(*f32(p, z, bank))
  np.testing.assert_allclose(float(mv), mean_shift_ref(p, z, bank, 3), rtol=1e-5)
  refs = (num_grad(lambda v: byol_ref(v, z), p), num_grad(lambda v: simsiam_ref(v, z), p),
          num_grad(lambda v: mean_shift_ref(v, z, bank, 3), p))
  for got, ref in zip((bg[0], sgr[0], mg[0]), refs):
    assert np.abs(ref).max() > 1e-2
    np.testing.assert_allclose(np.asarray(got), ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())
  for g in (bg[1], sgr[1], mg[1], mg[2]):
    np.testing.assert_array_equal(np.asarray(g), 0.0)
  pz, zz, bz = f32(p, z, bank)
  pz[0], zz[1], bz[2] = 0.0, 0.0, 0.0
  out = self_distill_grads(pz, zz, bz)
  assert_finite(out)
  # Identical p and z (cosine 1, distance 0): still finite.
  assert_finite(self_distill_grads(*f32(p, p, bank)))


def test_byol_simsiam_bf16():
  rng = np.random.default_rng(4)
  p, z = rows(rng, 7, 33), rows(rng, 7, 33)
  pb, zb = jnp.asarray(p, jnp.bfloat16), jnp.asarray(z, jnp.bfloat16)
  pr, zr = np.asarray(pb, np.float32), np.asarray(zb, np.float32)
  for f, ref in ((byol_jit, byol_ref), (simsiam_jit, simsiam_ref)):
    got = f(pb, zb)
    assert_f32_scalar(got)
    np.testing.assert_allclose(float(got), ref(pr, zr), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(got), float(f(p, z)), rtol=BF16_RTOL, atol=1e-3)


@HYP
@hypothesis.given(p=hyp_rows, z=hyp_rows)
def test_byol_simsiam_property(p, z):
  """byol in [0, 4], simsiam in [-1, 1]; for rows with p, z both non-zero byol = 2 + 2 simsiam."""
  b, s = float(byol_jit(p, z)), float(simsiam_jit(p, z))
  assert -1e-6 <= b <= 4.0 + 1e-5
  assert -1.0 - 1e-6 <= s <= 1.0 + 1e-6
  if np.all(np.any(p != 0, axis=1)) and np.all(np.any(z != 0, axis=1)):
    np.testing.assert_allclose(b, 2.0 + 2.0 * s, atol=1e-5)


@pytest.mark.parametrize('fn', [losses.byol_loss, losses.simsiam_loss])
@pytest.mark.parametrize('shapes,name', [
    (((4,), (4,)), 'p'),
    (((4, 3), (4, 5)), 'z'),
    (((4, 3), (2, 3)), 'z'),
])
def test_byol_simsiam_bad_input_names_argument(fn, shapes, name):
  raises_naming(fn, [np.ones(s, np.float32) for s in shapes], name)


# ------------------------------------------------------------------------------ mean_shift_loss

@pytest.mark.parametrize('n,d,m,k', [(1, 3, 4, 2), (2, 5, 6, 4), (3, 4, 6, 3), (5, 7, 9, 5),
                                     (7, 33, 5, 6)])
def test_mean_shift_matches_reference(n, d, m, k):
  rng = np.random.default_rng(40 * n + m + k)
  for _ in range(2):
    p, z, bank = rows(rng, n, d), rows(rng, n, d), rows(rng, m, d) * row_scales(rng, m)
    got = ms_jit(p, z, bank, k=k)
    assert_f32_scalar(got)
    np.testing.assert_allclose(float(got), mean_shift_ref(p, z, bank, k), rtol=1e-5, atol=1e-5)


def test_mean_shift_identities():
  rng = np.random.default_rng(5)
  n, d, m = 5, 7, 9
  p, z, bank = rows(rng, n, d), rows(rng, n, d), rows(rng, m, d)
  byol = float(byol_jit(p, z))
  # k = 1: only z_i itself, whatever the bank.
  np.testing.assert_allclose(float(ms_jit(p, z, bank, k=1)), byol, rtol=1e-6)
  # A bank holding an exact copy and a positive multiple of every z_i: the candidate set keeps
  # both (cosine 1), so with k = 3 all neighbours of z_i point along z_i and the loss is byol.
  copies = np.concatenate([bank[:5], z[::-1], bank[5:], 3.0 * z])
  np.testing.assert_allclose(float(ms_jit(p, z, copies, k=3)), byol, rtol=1e-5)
  np.testing.assert_allclose(float(ms_jit(p, z, copies, k=3)), mean_shift_ref(p, z, copies, 3),
                             rtol=1e-5)
  # One more neighbour brings in a genuine bank row, and the loss moves off byol.
  assert abs(float(ms_jit(p, z, copies, k=4)) - byol) > 1e-3
  # k = M + 1 takes every candidate: an order-free closed form.
  want = np.mean([(sqdist_unit(p[i], z[i]) + sum(sqdist_unit(p[i], b) for b in bank)) / (m + 1)
                  for i in range(n)])
  np.testing.assert_allclose(float(ms_jit(p, z, bank, k=m + 1)), want, rtol=1e-5)
  # Positive row scales of p, z and bank, and a permutation of the bank, change nothing.
  base = float(ms_jit(p, z, bank, k=5))
  got = ms_jit(p * row_scales(rng, n), z * row_scales(rng, n),
               (bank * row_scales(rng, m))[rng.permutation(m)], k=5)
  np.testing.assert_allclose(float(got), base, rtol=1e-5)
  # Neighbours are chosen by z, not by p: p = z leaves only the bank neighbours' terms.
  np.testing.assert_allclose(float(ms_jit(z, z, bank, k=5)), mean_shift_ref(z, z, bank, 5),
                             rtol=1e-5, atol=1e-6)


def test_mean_shift_jit_equals_eager():
  rng = np.random.default_rng(6)
  p, z, bank = rows(rng, 5, 7), rows(rng, 5, 7), rows(rng, 11, 7)
  eager = losses.mean_shift_loss(p, z, bank, k=5)
  assert_f32_scalar(eager)
  np.testing.assert_allclose(float(ms_jit(p, z, bank, k=5)), float(eager), rtol=1e-6)


def test_mean_shift_bf16():
  rng = np.random.default_rng(7)
  p, z, bank = rows(rng, 5, 7), rows(rng, 5, 7), rows(rng, 9, 7)
  b = [jnp.asarray(x, jnp.bfloat16) for x in (p, z, bank)]
  got = ms_jit(*b, k=5)
  assert_f32_scalar(got)
  np.testing.assert_allclose(float(got), mean_shift_ref(*(np.asarray(x, np.float32) for x in b), 5),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(got), float(ms_jit(p, z, bank, k=5)), rtol=BF16_RTOL)


@HYP
@hypothesis.given(p=hyp_rows, z=hyp_rows, bank=hyp_rows)
def test_mean_shift_property(p, z, bank):
  """In [0, 4]; k = 1 equals byol."""
  got = float(ms_jit(p, z, bank, k=3))
  assert -1e-6 <= got <= 4.0 + 1e-5
  np.testing.assert_allclose(float(ms_jit(p, z, bank, k=1)), float(byol_jit(p, z)), rtol=1e-6,
                             atol=1e-6)


@pytest.mark.parametrize('shapes,k,name', [
    (((4,), (4,), (6, 4)), 1, 'p'),
    (((4, 3), (4, 2), (6, 3)), 1, 'z'),
    (((4, 3), (4, 3), (6,)), 1, 'bank'),
    (((4, 3), (4, 3), (6, 5)), 1, 'bank'),
    (((4, 3), (4, 3), (6, 3)), 0, 'k'),
    (((4, 3), (4, 3), (6, 3)), 8, 'k'),
])
def test_mean_shift_bad_input_names_argument(shapes, k, name):
  f = lambda a, b, c: losses.mean_shift_loss(a, b, c, k=k)
  raises_naming(f, [np.ones(s, np.float32) for s in shapes], name)


# ------------------------------------------------------------------------------------ dino_loss

def dino_inputs(rng, s, t, n, k):
  """Student [S, N, K], teacher [T, N, K] logits and a [K] centre."""
  return (rows(rng, s, n, k), rows(rng, t, n, k),
          (0.1 * rng.normal(size=(k,))).astype(np.float32))


@pytest.mark.parametrize('s,t,n,k', [(3, 2, 2, 4), (2, 2, 3, 5), (4, 2, 5, 7), (6, 2, 1, 33),
                                     (3, 3, 2, 6)])
def test_dino_matches_reference(s, t, n, k):
  rng = np.random.default_rng(100 * s + 10 * t + k)
  for st_, tt in ((0.1, 0.04), (0.5, 0.2), (1.0, 1.0)):
    student, teacher, center = dino_inputs(rng, s, t, n, k)
    got = dino_jit(student, teacher, center, student_temp=st_, teacher_temp=tt)
    assert_f32_scalar(got)
    np.testing.assert_allclose(float(got), dino_ref(student, teacher, center, st_, tt),
                               rtol=1e-5, atol=1e-5)


def test_dino_only_cross_crop_pairs():
  """T = S = 2: loss = (H(q_0, p_1) + H(q_1, p_0)) / 2, the same-crop pairs (0,0), (1,1) are
  ignored. Built so that the same-crop terms are huge and the cross terms small."""
  n, k, st_, tt = 3, 5, 0.1, 0.04
  rng = np.random.default_rng(8)
  a, b = rows(rng, n, k), rows(rng, n, k)
  teacher = np.stack([a, b])
  student = np.stack([b, a])  # crop 0 of the student matches teacher crop 1 and vice versa
  center = np.zeros((k,), np.float32)

  def h(tlog, slog):  # mean_i -sum_k softmax(t / tt) log_softmax(s / st), vectorized
    tl = tlog / tt
    q = np.exp(tl - tl.max(-1, keepdims=True))
    q /= q.sum(-1, keepdims=True)
    sl = slog / st_
    logp = sl - sl.max(-1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
    return float(np.mean(-np.sum(q * logp, -1)))

  want = (h(a, a) + h(b, b)) / 2
  got = float(dino_jit(student, teacher, center, student_temp=st_, teacher_temp=tt))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  all_four = (h(a, a) + h(b, b) + h(a, b) + h(b, a)) / 4
  assert all_four > want + 1.0  # the two would be told apart
  # Swapping both crop orders together is a symmetry.
  np.testing.assert_allclose(
      float(dino_jit(student[::-1], teacher[::-1], center, student_temp=st_, teacher_temp=tt)),
      got, rtol=1e-5)


def test_dino_ignores_student_crop_of_lone_teacher():
  """T = 1: pair (0, 0) is excluded, so student crop 0 does not matter (value and gradient)."""
  rng = np.random.default_rng(9)
  student, teacher, center = dino_inputs(rng, 3, 1, 2, 4)
  base = float(dino_jit(student, teacher, center))
  np.testing.assert_allclose(base, dino_ref(student, teacher, center), rtol=1e-5)
  other = student.copy()
  other[0] = 100.0 * rows(rng, 2, 4)
  np.testing.assert_allclose(float(dino_jit(other, teacher, center)), base, rtol=1e-6)
  g = jax.jit(jax.grad(losses.dino_loss))(student, teacher, center)
  assert g.shape == student.shape
  np.testing.assert_array_equal(np.asarray(g[0]), 0.0)
  assert np.abs(np.asarray(g[1:])).max() > 1e-3


def test_dino_invariances():
  """Per-row shifts of student or teacher logits, a shift of the whole centre, and a permutation
  of the K classes applied to all three change nothing; a [1, K] centre means a [K] one."""
  rng = np.random.default_rng(10)
  student, teacher, center = dino_inputs(rng, 4, 2, 5, 7)
  base = float(dino_jit(student, teacher, center))
  np.testing.assert_allclose(float(dino_jit(student, teacher, center[None])), base, rtol=1e-6)
  shifted = dino_jit(student + rows(rng, 4, 5, 1), teacher + rows(rng, 2, 5, 1), center + 3.0)
  np.testing.assert_allclose(float(shifted), base, rtol=1e-5)
  perm = rng.permutation(7)
  np.testing.assert_allclose(float(dino_jit(student[..., perm], teacher[..., perm],
                                            center[perm])), base, rtol=1e-5)
  # The centre does matter when it is not uniform.
  assert abs(float(dino_jit(student, teacher, center + rows(rng, 7))) - base) > 1e-3


def test_dino_jit_equals_eager():
  rng = np.random.default_rng(11)
  student, teacher, center = dino_inputs(rng, 4, 2, 5, 7)
  eager = losses.dino_loss(student, teacher, center, student_temp=0.1, teacher_temp=0.04)
  assert_f32_scalar(eager)
  np.testing.assert_allclose(float(dino_jit(student, teacher, center, student_temp=0.1,
                                            teacher_temp=0.04)), float(eager), rtol=1e-6)


def test_dino_grad():
  """Gradient w.r.t. the student equals float64 central differences; none reaches the teacher;
  finite with extreme logits."""
  rng = np.random.default_rng(12)
  student, teacher, center = (x.astype(np.float64) for x in dino_inputs(rng, 3, 2, 2, 4))
  f = jax.jit(jax.value_and_grad(
      lambda a, b, c, st_, tt: losses.dino_loss(a, b, c, student_temp=st_, teacher_temp=tt),
      argnums=(0, 1)))
  for st_, tt in ((0.5, 0.2), (0.1, 0.04)):
    _, (gs, gt) = f(student.astype(np.float32), teacher.astype(np.float32),
                    center.astype(np.float32), st_, tt)
    ref = num_grad(lambda v: dino_ref(v, teacher, center, st_, tt), student)
    np.testing.assert_allclose(np.asarray(gs), ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())
    np.testing.assert_array_equal(np.asarray(gt), 0.0)
  big = lambda x: (x * 1e3).astype(np.float32)
  loss, grads = f(big(student), big(teacher), center.astype(np.float32), 0.1, 0.04)
  assert np.isfinite(float(loss))
  assert_finite(grads)


def test_dino_bf16():
  rng = np.random.default_rng(13)
  student, teacher, center = dino_inputs(rng, 4, 2, 5, 7)
  sb, tb = jnp.asarray(student, jnp.bfloat16), jnp.asarray(teacher, jnp.bfloat16)
  got = dino_jit(sb, tb, center)
  assert_f32_scalar(got)
  want = dino_ref(np.asarray(sb, np.float32), np.asarray(tb, np.float32), center)
  np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(got), float(dino_jit(student, teacher, center)),
                             rtol=DINO_BF16_RTOL)


@HYP
@hypothesis.given(
    student=hnp.arrays(np.float32, (3, 2, 4), elements=st.floats(-5, 5, width=32)),
    teacher=hnp.arrays(np.float32, (2, 2, 4), elements=st.floats(-5, 5, width=32)),
    center=hnp.arrays(np.float32, (4,), elements=st.floats(-1, 1, width=32)))
def test_dino_property(student, teacher, center):
  """A cross-entropy: finite, equal to the reference, and at least the mean entropy of the
  teacher targets (Gibbs), hence >= 0."""
  got = float(dino_jit(student, teacher, center, student_temp=0.1, teacher_temp=0.04))
  assert np.isfinite(got)
  np.testing.assert_allclose(got, dino_ref(student, teacher, center), rtol=1e-4, atol=1e-3)
  ents = []
  for t in range(2):
    for i in range(2):
      q = softmax64((teacher[t, i].astype(np.float64) - center) / 0.04)
      ents.append(-np.sum(q * np.log(np.maximum(q, 1e-300))))
  assert got >= np.mean(ents) - 1e-3
  assert got >= -1e-5


@pytest.mark.parametrize('shapes,name', [
    (((4, 3), (2, 4, 3), (3,)), 'student'),
    (((1, 4, 3), (1, 4, 3), (3,)), 'student'),
    (((3, 4, 3), (4, 3), (3,)), 'teacher'),
    (((3, 4, 3), (2, 5, 3), (3,)), 'teacher'),
    (((3, 4, 3), (2, 4, 6), (6,)), 'teacher'),
    (((2, 4, 3), (3, 4, 3), (3,)), 'teacher'),
    (((3, 4, 3), (2, 4, 3), (4,)), 'center'),
])
def test_dino_bad_input_names_argument(shapes, name):
  raises_naming(losses.dino_loss, [np.ones(s, np.float32) for s in shapes], name)


# ---------------------------------------------------------------------------------- dino_center

@pytest.mark.parametrize('center_shape', [(7,), (1, 7)])
@pytest.mark.parametrize('teacher_shape', [(2, 5, 7), (3, 7)])
def test_dino_center_formula(center_shape, teacher_shape):
  rng = np.random.default_rng(14)
  center = rows(rng, *center_shape)
  teacher = rows(rng, *teacher_shape)
  rows_t = teacher.reshape(-1, 7).astype(np.float64)
  for m in (0.9, 0.0, 1.0, 0.996):
    got = center_jit(center, teacher, momentum=m)
    assert got.shape == center_shape
    assert got.dtype == jnp.float32
    mean = np.array([sum(r[j] for r in rows_t) / len(rows_t) for j in range(7)])
    want = m * center.astype(np.float64) + (1 - m) * mean.reshape(center_shape)
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)


def test_dino_center_eager_bf16_and_bad_center():
  rng = np.random.default_rng(15)
  center, teacher = rows(rng, 1, 7), rows(rng, 2, 5, 7)
  eager = losses.dino_center(center, teacher, momentum=0.9)
  np.testing.assert_allclose(np.asarray(center_jit(center, teacher, momentum=0.9)),
                             np.asarray(eager), rtol=1e-6)
  tb = jnp.asarray(teacher, jnp.bfloat16)
  got = center_jit(center, tb, momentum=0.9)
  assert got.dtype == jnp.float32 and got.shape == (1, 7)
  want = 0.9 * center + 0.1 * np.asarray(tb, np.float32).reshape(-1, 7).mean(0)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-6)
  raises_naming(losses.dino_center, [np.zeros((6,), np.float32), teacher], 'center')
