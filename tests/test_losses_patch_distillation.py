"""Tests of ibot_patch_loss, ibot_patch_center, koleo_loss, sinkhorn_knopp_teacher and ijepa_loss
(jssl.losses.distillation) against docs/losses.md.

Each reference below is float64 NumPy written from docs/losses.md, one patch (or row) at a time;
none calls jssl. float32 results are compared with rtol 1e-5 unless a comment says otherwise.
The 8-device equality of value and gradient is in tests/test_losses_sharded.py.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses

ERRORS = (AssertionError, ValueError, TypeError)
# bf16 against float32 inputs, relative. The teacher temperature 0.04 turns the bf16 rounding of
# O(1) logits into a few percent on the sharpened targets (as for DINO); the other losses move by
# about the bf16 rounding (4e-3 relative per input).
TEMP_BF16_RTOL = 5e-2
BF16_RTOL = 2e-2
# Sinkhorn targets at teacher_temp 0.1 from bf16 logits: absolute, on probabilities.
SINKHORN_BF16_ATOL = 5e-2

_ibot = jax.jit(losses.ibot_patch_loss)
_ibot_grad = jax.jit(jax.grad(
    lambda s, t, m, c, st_, tt: losses.ibot_patch_loss(s, t, m, c, student_temp=st_,
                                                       teacher_temp=tt), argnums=(0, 1, 3)))
_center = jax.jit(losses.ibot_patch_center)
koleo = jax.jit(losses.koleo_loss)
koleo_grad = jax.jit(jax.value_and_grad(losses.koleo_loss))
skt = jax.jit(losses.sinkhorn_knopp_teacher, static_argnames='n_iters')
ijepa = jax.jit(losses.ijepa_loss)
ijepa_grad = jax.jit(jax.value_and_grad(losses.ijepa_loss, argnums=(0, 1)))


def ibot(student, teacher, mask, center, student_temp=0.1, teacher_temp=0.04):
  """Jitted ibot_patch_loss, temperatures always passed (traced): one compile per shape."""
  return _ibot(student, teacher, mask, center, student_temp=student_temp,
               teacher_temp=teacher_temp)


def ibot_grad(student, teacher, mask, center, student_temp=0.1, teacher_temp=0.04):
  """Gradients of ibot_patch_loss w.r.t. (student, teacher, center)."""
  return _ibot_grad(student, teacher, mask, center, student_temp, teacher_temp)


def center_update(center, teacher, mask=None, momentum=0.9):
  """Jitted ibot_patch_center, momentum traced."""
  return _center(center, teacher, mask, momentum=momentum)


# ------------------------------------------------------------------------------------- helpers

def f64(x):
  return np.asarray(x, np.float64)


def softmax64(v):
  v = f64(v)
  e = np.exp(v - v.max())
  return e / e.sum()


def rows(rng, *shape):
  """Gaussian float32 array."""
  return rng.normal(size=shape).astype(np.float32)


def patch_mask(rng, n, l, empty_rows=()):
  """[N, L] bool mask, about half the patches, with the listed images left without a masked patch
  and every other image holding at least one."""
  m = rng.random((n, l)) < 0.5
  m[:, 0] = True
  for i in empty_rows:
    m[i] = False
  return m


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


def assert_f32_scalar(x):
  assert jnp.shape(x) == ()
  assert x.dtype == jnp.float32


def assert_finite(tree):
  for leaf in jax.tree_util.tree_leaves(tree):
    assert np.all(np.isfinite(np.asarray(leaf)))


def raises_naming(f, args, name):
  """f(*args) raises at trace time, eagerly and under jit, with `name` (a whole word) in the
  message."""
  for g in (f, jax.jit(f)):
    with pytest.raises(ERRORS) as exc:
      g(*args)
    assert re.search(rf'\b{re.escape(name)}\b', str(exc.value)), str(exc.value)


def bf16_pair(*xs):
  """The arrays as bfloat16 and the same bfloat16 values as float32."""
  b = [jnp.asarray(x, jnp.bfloat16) for x in xs]
  return b, [np.asarray(x, np.float32) for x in b]


# ---------------------------------------------------------------------------------- references

def ibot_patch_ce64(s_row, t_row, center, student_temp, teacher_temp):
  """-sum_k q_k log p_k for one patch."""
  q = softmax64((f64(t_row) - f64(center).reshape(-1)) / teacher_temp)
  log_p = np.log(softmax64(f64(s_row) / student_temp))
  return float(-np.sum(q * log_p))


def ibot_ref(student, teacher, mask, center, student_temp=0.1, teacher_temp=0.04):
  """Per image: mean of the patch cross-entropies over its masked patches (0 when none);
  then the mean over all N images."""
  n, l, _ = student.shape
  per_image = []
  for i in range(n):
    ces = [ibot_patch_ce64(student[i, j], teacher[i, j], center, student_temp, teacher_temp)
           for j in range(l) if mask[i, j]]
    per_image.append(sum(ces) / len(ces) if ces else 0.0)
  return float(sum(per_image) / n)


def ibot_center_ref(center, teacher, mask, momentum):
  """momentum * center + (1 - momentum) * (mask-weighted) mean of the teacher's patch rows; the
  centre unchanged when the mask selects nothing."""
  k = teacher.shape[-1]
  t = f64(teacher).reshape(-1, k)
  w = np.ones(len(t)) if mask is None else f64(mask).reshape(-1)
  if w.sum() == 0:
    return f64(center)
  mean = np.zeros(k)
  for r, wr in zip(t, w):
    mean += wr * r
  mean /= w.sum()
  return momentum * f64(center) + (1 - momentum) * mean.reshape(np.shape(center))


def koleo_ref(x, eps=1e-8):
  """u_i = x_i / max(||x_i||, eps); the nearest other row by the largest dot product;
  -mean log(d + eps)."""
  x = f64(x)
  u = [r / max(np.linalg.norm(r), eps) for r in x]
  total = 0.0
  for i in range(len(u)):
    best, best_dot = None, -np.inf
    for j in range(len(u)):
      if j != i and float(np.dot(u[i], u[j])) > best_dot:
        best, best_dot = j, float(np.dot(u[i], u[j]))
    total += -np.log(np.linalg.norm(u[i] - u[best]) + eps)
  return total / len(u)


def sinkhorn_teacher_ref(logits, teacher_temp, n_iters):
  """DINOv2's Sinkhorn-Knopp teacher as written in docs/losses.md, in the linear domain (where
  float64 exp does not overflow)."""
  q = np.exp(f64(logits) / teacher_temp).T  # [K, N]
  k, n = q.shape
  q /= q.sum()
  for _ in range(n_iters):
    q /= q.sum(axis=1, keepdims=True)
    q /= k
    q /= q.sum(axis=0, keepdims=True)
    q /= n
  return (q * n).T


def layer_norm64(v, eps=1e-6):
  v = f64(v)
  mu = v.mean()
  var = np.mean((v - mu) ** 2)
  return (v - mu) / np.sqrt(var + eps)


def ijepa_ref(predicted, target, mask, ln_eps=1e-6):
  """sum over target-block patches of mean_D (predicted - layer_norm(target))^2, divided by
  max(number of such patches, 1)."""
  n, l, _ = predicted.shape
  total, count = 0.0, 0.0
  for i in range(n):
    for j in range(l):
      w = float(mask[i, j])
      if w:
        total += w * np.mean((f64(predicted[i, j]) - layer_norm64(target[i, j], ln_eps)) ** 2)
        count += w
  return total / max(count, 1.0)


# ----------------------------------------------------------------------------- ibot_patch_loss

def ibot_inputs(rng, n, l, k, empty_rows=()):
  return (rows(rng, n, l, k), rows(rng, n, l, k), patch_mask(rng, n, l, empty_rows),
          (0.3 * rng.normal(size=(k,))).astype(np.float32))


@pytest.mark.parametrize('n,l,k,empty', [(1, 1, 3, ()), (2, 3, 4, ()), (3, 5, 7, (1,)),
                                         (4, 9, 33, (0, 3)), (5, 2, 6, (2,))])
def test_ibot_matches_reference(n, l, k, empty):
  rng = np.random.default_rng(100 * n + 10 * l + k)
  for st_, tt in ((0.1, 0.04), (0.5, 0.2), (1.0, 1.0)):
    student, teacher, mask, center = ibot_inputs(rng, n, l, k, empty)
    want = ibot_ref(student, teacher, mask, center, st_, tt)
    for m in (mask, mask.astype(np.float32)):
      for cen in (center, center[None]):
        got = ibot(student, teacher, m, cen, st_, tt)
        assert_f32_scalar(got)
        np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-5)


def test_ibot_averages_per_image_then_over_all_images():
  """Image 0 has 1 masked patch, image 1 has 4, image 2 none: the loss is (mean_0 + mean_1 + 0)/3,
  which neither the mean over all 5 masked patches nor the mean over the 2 masked images equals."""
  rng = np.random.default_rng(1)
  student, teacher, _, center = ibot_inputs(rng, 3, 5, 6)
  mask = np.zeros((3, 5), bool)
  mask[0, 2] = True
  mask[1, 1:] = True
  h = np.array([[ibot_patch_ce64(student[i, j], teacher[i, j], center, 0.1, 0.04)
                 for j in range(5)] for i in range(3)])
  mean0, mean1 = h[0, 2], h[1, 1:].mean()
  want = (mean0 + mean1 + 0.0) / 3
  got = float(ibot(student, teacher, mask, center))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  for wrong in ((h[0, 2] + h[1, 1:].sum()) / 5, (mean0 + mean1) / 2, (mean0 + mean1) / 3 * 2):
    assert abs(wrong - want) > 1e-2 * abs(want)


def test_ibot_unmasked_patches_do_not_matter():
  """Student and teacher logits outside the mask change neither the value nor the gradient, and
  no gradient reaches the unmasked student patches."""
  rng = np.random.default_rng(2)
  student, teacher, mask, center = ibot_inputs(rng, 4, 6, 5, empty_rows=(2,))
  base = float(ibot(student, teacher, mask, center))
  s2, t2 = student.copy(), teacher.copy()
  s2[~mask] = 50.0 * rows(rng, int((~mask).sum()), 5)
  t2[~mask] = 50.0 * rows(rng, int((~mask).sum()), 5)
  np.testing.assert_allclose(float(ibot(s2, t2, mask, center)), base, rtol=1e-6)
  gs, _, _ = ibot_grad(student, teacher, mask, center)
  np.testing.assert_array_equal(np.asarray(gs)[~mask], 0.0)
  assert np.abs(np.asarray(gs)[mask]).min() > 0.0
  np.testing.assert_allclose(np.asarray(ibot_grad(s2, t2, mask, center)[0]), np.asarray(gs),
                             rtol=1e-5, atol=1e-7)
  # The same change at a masked patch does move the loss.
  s3 = student.copy()
  s3[0, 0] = 50.0 * rows(rng, 5)
  assert abs(float(ibot(s3, teacher, mask, center)) - base) > 1e-2


def test_ibot_no_masked_patch_gives_zero():
  rng = np.random.default_rng(3)
  student, teacher, _, center = ibot_inputs(rng, 3, 4, 5)
  mask = np.zeros((3, 4), bool)
  got = ibot(student, teacher, mask, center)
  assert float(got) == 0.0
  gs, _, _ = ibot_grad(student, teacher, mask, center)
  np.testing.assert_array_equal(np.asarray(gs), 0.0)


def test_ibot_center_and_shift_invariances():
  """The centre is subtracted from the teacher logits: a uniform shift of it, per-patch shifts of
  either logits and a permutation of the K outputs applied to all change nothing; a non-uniform
  change of the centre does."""
  rng = np.random.default_rng(4)
  student, teacher, mask, center = ibot_inputs(rng, 3, 5, 7)
  base = float(ibot(student, teacher, mask, center))
  np.testing.assert_allclose(base, ibot_ref(student, teacher, mask, center), rtol=1e-5)
  shifted = ibot(student + rows(rng, 3, 5, 1), teacher + rows(rng, 3, 5, 1), mask, center - 2.0)
  np.testing.assert_allclose(float(shifted), base, rtol=1e-5)
  perm = rng.permutation(7)
  np.testing.assert_allclose(float(ibot(student[..., perm], teacher[..., perm], mask,
                                        center[perm])), base, rtol=1e-5)
  assert abs(float(ibot(student, teacher, mask, center + rows(rng, 7))) - base) > 1e-2
  # With the centre equal to one teacher patch's logits that patch's target is uniform.
  c0 = teacher[0, 0].copy()
  np.testing.assert_allclose(float(ibot(student, teacher, mask, c0)),
                             ibot_ref(student, teacher, mask, c0), rtol=1e-5)


def test_ibot_grad():
  """The student gradient equals float64 central differences of the reference; the teacher and
  the centre get none; extreme logits stay finite."""
  rng = np.random.default_rng(5)
  student, teacher, mask, center = ibot_inputs(rng, 3, 3, 4, empty_rows=(1,))
  for st_, tt in ((0.5, 0.2), (0.1, 0.04)):
    gs, gt, gc = ibot_grad(student, teacher, mask, center, st_, tt)
    ref = num_grad(lambda v: ibot_ref(v, teacher, mask, center, st_, tt), student)
    assert np.abs(ref).max() > 1e-2
    np.testing.assert_allclose(np.asarray(gs), ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())
    np.testing.assert_array_equal(np.asarray(gt), 0.0)
    np.testing.assert_array_equal(np.asarray(gc), 0.0)
  big = lambda x: (x * 1e3).astype(np.float32)
  assert np.isfinite(float(ibot(big(student), big(teacher), mask, center)))
  assert_finite(ibot_grad(big(student), big(teacher), mask, center))


def test_ibot_jit_equals_eager_and_bf16():
  rng = np.random.default_rng(6)
  student, teacher, mask, center = ibot_inputs(rng, 4, 6, 9, empty_rows=(3,))
  eager = losses.ibot_patch_loss(student, teacher, mask, center, student_temp=0.1,
                                 teacher_temp=0.04)
  assert_f32_scalar(eager)
  np.testing.assert_allclose(float(ibot(student, teacher, mask, center)), float(eager), rtol=1e-6)
  (sb, tb), (sr, tr) = bf16_pair(student, teacher)
  got = ibot(sb, tb, mask, center)
  assert_f32_scalar(got)
  np.testing.assert_allclose(float(got), ibot_ref(sr, tr, mask, center), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(got), float(eager), rtol=TEMP_BF16_RTOL)


@pytest.mark.parametrize('shapes,name', [
    (((4, 3), (4, 3), (4,), (3,)), 'student'),
    (((2, 4, 3), (2, 4), (2, 4), (3,)), 'teacher'),
    (((2, 4, 3), (2, 5, 3), (2, 4), (3,)), 'teacher'),
    (((2, 4, 3), (2, 4, 3), (2, 4, 1), (3,)), 'mask'),
    (((2, 4, 3), (2, 4, 3), (2, 5), (3,)), 'mask'),
    (((2, 4, 3), (2, 4, 3), (2, 4), (4,)), 'center'),
])
def test_ibot_bad_input_names_argument(shapes, name):
  raises_naming(losses.ibot_patch_loss, [np.ones(s, np.float32) for s in shapes], name)


# --------------------------------------------------------------------------- ibot_patch_center

@pytest.mark.parametrize('center_shape', [(7,), (1, 7)])
@pytest.mark.parametrize('teacher_shape', [(3, 5, 7), (2, 3, 4, 7), (6, 7)])
def test_ibot_center_formula(center_shape, teacher_shape):
  rng = np.random.default_rng(7)
  center, teacher = rows(rng, *center_shape), rows(rng, *teacher_shape)
  mask = rng.random(teacher_shape[:-1]) < 0.4
  mask.reshape(-1)[0] = True
  for m in (0.9, 0.0, 1.0, 0.996):
    for msk in (None, mask, mask.astype(np.float32)):
      got = center_update(center, teacher, msk, m)
      assert got.shape == center_shape and got.dtype == jnp.float32
      np.testing.assert_allclose(np.asarray(got), ibot_center_ref(center, teacher, msk, m),
                                 rtol=1e-5, atol=1e-6)


def test_ibot_center_mask_conventions():
  """An all-true mask is the plain mean; a partial mask is another mean; an empty mask keeps the
  centre; weights count as weights; the update gets no gradient through the teacher."""
  rng = np.random.default_rng(8)
  center, teacher = rows(rng, 5), rows(rng, 4, 6, 5)
  plain = np.asarray(center_update(center, teacher, None, 0.5))
  np.testing.assert_allclose(np.asarray(center_update(center, teacher, np.ones((4, 6), bool), 0.5)),
                             plain, rtol=1e-6, atol=1e-7)
  part = rng.random((4, 6)) < 0.3
  part[0, 0] = True
  assert np.abs(np.asarray(center_update(center, teacher, part, 0.5)) - plain).max() > 1e-2
  np.testing.assert_array_equal(
      np.asarray(center_update(center, teacher, np.zeros((4, 6), bool), 0.5)), center)
  w = rng.random((4, 6)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(center_update(center, teacher, w, 0.5)),
                             ibot_center_ref(center, teacher, w, 0.5), rtol=1e-5, atol=1e-6)
  for msk in (None, part):
    g = jax.grad(lambda t, m=msk: jnp.sum(losses.ibot_patch_center(center, t, m) * center))(teacher)
    np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_ibot_center_eager_bf16_and_bad_input():
  rng = np.random.default_rng(9)
  center, teacher = rows(rng, 1, 7), rows(rng, 2, 5, 7)
  eager = losses.ibot_patch_center(center, teacher, momentum=0.9)
  np.testing.assert_allclose(np.asarray(center_update(center, teacher)), np.asarray(eager),
                             rtol=1e-6)
  (tb,), (tr,) = bf16_pair(teacher)
  got = center_update(center, tb)
  assert got.dtype == jnp.float32 and got.shape == (1, 7)
  np.testing.assert_allclose(np.asarray(got), ibot_center_ref(center, tr, None, 0.9), rtol=1e-5,
                             atol=1e-6)
  raises_naming(losses.ibot_patch_center, [np.zeros((6,), np.float32), teacher], 'center')
  raises_naming(losses.ibot_patch_center, [np.zeros((7,), np.float32), np.zeros((7,))], 'teacher')
  raises_naming(losses.ibot_patch_center, [np.zeros((7,), np.float32), teacher,
                                           np.ones((2, 4), bool)], 'mask')


# ---------------------------------------------------------------------------------- koleo_loss

@pytest.mark.parametrize('n,d', [(2, 3), (3, 2), (5, 4), (8, 16), (17, 5)])
def test_koleo_matches_reference(n, d):
  rng = np.random.default_rng(10 * n + d)
  for _ in range(3):
    x = rows(rng, n, d) * (10.0 ** rng.uniform(-2, 2, size=(n, 1))).astype(np.float32)
    got = koleo(x)
    assert_f32_scalar(got)
    np.testing.assert_allclose(float(got), koleo_ref(x), rtol=1e-5, atol=1e-5)
  got = losses.koleo_loss(x, eps=1e-3)
  np.testing.assert_allclose(float(got), koleo_ref(x, 1e-3), rtol=1e-5, atol=1e-5)


def test_koleo_geometry():
  """Closed forms: N points evenly spread on a circle are 2 sin(pi / N) from their nearest
  neighbour (self excluded: otherwise every distance would be 0 and the loss -log(1e-8));
  two orthogonal rows are sqrt(2) apart; a duplicated row costs -log(1e-8) for both copies."""
  for n in (3, 5, 12):
    ang = 2 * np.pi * np.arange(n) / n
    x = np.stack([np.cos(ang), np.sin(ang), np.zeros(n)], 1).astype(np.float32) * 3.0
    np.testing.assert_allclose(float(koleo(x)), -np.log(2 * np.sin(np.pi / n) + 1e-8), rtol=1e-5)
  x = np.array([[2.0, 0.0], [0.0, 0.5]], np.float32)
  np.testing.assert_allclose(float(koleo(x)), -np.log(np.sqrt(2.0) + 1e-8), rtol=1e-6)
  rng = np.random.default_rng(11)
  x = rows(rng, 4, 6)
  x[3] = x[1]
  want = koleo_ref(x)
  np.testing.assert_allclose(float(koleo(x)), want, rtol=1e-5)
  assert want > 2 * -np.log(1e-8) / 4 - 1.0  # the duplicate pair dominates


def test_koleo_invariances():
  """Positive row scales and a permutation of the rows change nothing; the loss falls when the
  rows spread out."""
  rng = np.random.default_rng(12)
  x = rows(rng, 9, 5)
  base = float(koleo(x))
  scales = (10.0 ** rng.uniform(-3, 3, size=(9, 1))).astype(np.float32)
  np.testing.assert_allclose(float(koleo(x * scales)), base, rtol=1e-5)
  np.testing.assert_allclose(float(koleo(x[rng.permutation(9)])), base, rtol=1e-5)
  clustered = x + 20.0 * np.ones((1, 5), np.float32)  # all rows near one direction
  assert float(koleo(clustered)) > base + 1.0


def test_koleo_grad():
  """Gradient equals float64 central differences of the reference (it flows into a row and into
  its neighbour); finite with duplicate and zero rows."""
  rng = np.random.default_rng(13)
  x = rows(rng, 5, 3)
  val, g = koleo_grad(x)
  np.testing.assert_allclose(float(val), koleo_ref(x), rtol=1e-5)
  ref = num_grad(koleo_ref, x)
  assert np.abs(ref).max() > 1e-2
  np.testing.assert_allclose(np.asarray(g), ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())
  dup = x.copy()
  dup[2] = dup[0]
  dup[4] = 0.0
  val, g = koleo_grad(dup)
  np.testing.assert_allclose(float(val), koleo_ref(dup), rtol=1e-5)
  assert_finite((val, g))


def test_koleo_jit_equals_eager_and_bf16():
  rng = np.random.default_rng(14)
  x = rows(rng, 12, 16)
  eager = losses.koleo_loss(x)
  assert_f32_scalar(eager)
  np.testing.assert_allclose(float(koleo(x)), float(eager), rtol=1e-6)
  (xb,), (xr,) = bf16_pair(x)
  got = koleo(xb)
  assert_f32_scalar(got)
  np.testing.assert_allclose(float(got), koleo_ref(xr), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(float(got), float(eager), rtol=BF16_RTOL, atol=1e-3)


@pytest.mark.parametrize('shape', [(4,), (2, 3, 4), (1, 4)])
def test_koleo_bad_input_names_argument(shape):
  raises_naming(losses.koleo_loss, [np.ones(shape, np.float32)], 'x')


# ---------------------------------------------------------------------- sinkhorn_knopp_teacher

@pytest.mark.parametrize('n,k', [(1, 3), (4, 3), (6, 10), (16, 7)])
@pytest.mark.parametrize('temp,iters', [(0.1, 3), (0.04, 1), (0.5, 10)])
def test_sinkhorn_teacher_matches_reference(n, k, temp, iters):
  rng = np.random.default_rng(n * k + iters)
  logits = rows(rng, n, k)
  got = skt(logits, teacher_temp=temp, n_iters=iters)
  assert got.shape == (n, k) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), sinkhorn_teacher_ref(logits, temp, iters),
                             rtol=1e-4, atol=1e-6)
  # The same computation as SwAV's sinkhorn with epsilon = teacher_temp (eager against jit:
  # float32 rounding only).
  np.testing.assert_allclose(np.asarray(got),
                             np.asarray(losses.sinkhorn(logits, epsilon=temp, n_iters=iters)),
                             rtol=1e-5, atol=1e-7)


def test_sinkhorn_teacher_default_iterations():
  rng = np.random.default_rng(15)
  logits = rows(rng, 8, 5)
  got = losses.sinkhorn_knopp_teacher(logits, teacher_temp=0.07)
  np.testing.assert_allclose(np.asarray(got), sinkhorn_teacher_ref(logits, 0.07, 3), rtol=1e-4,
                             atol=1e-6)
  assert np.abs(np.asarray(got) - sinkhorn_teacher_ref(logits, 0.07, 1)).max() > 1e-3


def test_sinkhorn_teacher_marginals():
  """Rows sum to 1 after any number of iterations; the prototype totals approach N / K; softmax
  targets (no Sinkhorn) would be far from equipartition on these skewed logits."""
  rng = np.random.default_rng(16)
  n, k = 24, 6
  logits = rows(rng, n, k) + np.linspace(0.0, 1.0, k, dtype=np.float32)  # favours the last ones
  for iters in (1, 3, 200):
    q = np.asarray(skt(logits, teacher_temp=0.1, n_iters=iters))
    assert np.all(q >= 0)
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(q.sum(0), n / k, rtol=1e-3)
  soft = np.exp(f64(logits) / 0.1)
  soft /= soft.sum(1, keepdims=True)
  assert np.abs(soft.sum(0) - n / k).max() > 1.0


def test_sinkhorn_teacher_invariances():
  """A centre (the same [K] vector added to every row) changes nothing at any iteration count; a
  per-row constant changes nothing once converged; a K-permutation permutes the output."""
  rng = np.random.default_rng(17)
  logits = rows(rng, 10, 6)
  base3 = np.asarray(skt(logits, teacher_temp=0.1, n_iters=3))
  centre = 3.0 * rows(rng, 1, 6)
  np.testing.assert_allclose(np.asarray(skt(logits + centre, teacher_temp=0.1, n_iters=3)), base3,
                             rtol=1e-4, atol=1e-6)
  base_conv = np.asarray(skt(logits, teacher_temp=0.1, n_iters=300))
  per_row = 2.0 * rows(rng, 10, 1)
  np.testing.assert_allclose(np.asarray(skt(logits + per_row, teacher_temp=0.1, n_iters=300)),
                             base_conv, rtol=0, atol=1e-4)
  perm = rng.permutation(6)
  np.testing.assert_allclose(np.asarray(skt(logits[:, perm], teacher_temp=0.1, n_iters=3)),
                             base3[:, perm], rtol=1e-4, atol=1e-6)


def test_sinkhorn_teacher_extremes_and_no_gradient():
  """Logits of 30 at temperature 0.01 (exp(3000)) stay finite in the log domain, rows sum to 1;
  no gradient reaches the logits."""
  rng = np.random.default_rng(18)
  logits = 30.0 * rows(rng, 8, 5)
  q = np.asarray(skt(logits, teacher_temp=0.01, n_iters=3))
  assert np.all(np.isfinite(q))
  np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-5)
  w = rows(rng, 8, 5)
  g = jax.grad(lambda x: jnp.sum(losses.sinkhorn_knopp_teacher(x, teacher_temp=0.1) * w))(logits)
  np.testing.assert_array_equal(np.asarray(g), 0.0)


def test_sinkhorn_teacher_jit_eager_bf16_and_bad_input():
  rng = np.random.default_rng(19)
  logits = rows(rng, 8, 6)
  eager = losses.sinkhorn_knopp_teacher(logits, teacher_temp=0.1, n_iters=3)
  traced_temp = jax.jit(lambda x, t: losses.sinkhorn_knopp_teacher(x, teacher_temp=t))
  np.testing.assert_allclose(np.asarray(traced_temp(logits, 0.1)), np.asarray(eager), rtol=1e-6,
                             atol=1e-7)
  (lb,), (lr,) = bf16_pair(logits)
  got = skt(lb, teacher_temp=0.1, n_iters=3)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got), sinkhorn_teacher_ref(lr, 0.1, 3), rtol=1e-4,
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(got), np.asarray(eager), rtol=0, atol=SINKHORN_BF16_ATOL)
  for shape in ((6,), (2, 3, 4)):
    raises_naming(lambda x: losses.sinkhorn_knopp_teacher(x, teacher_temp=0.1),
                  [np.ones(shape, np.float32)], 'teacher_logits')


# ---------------------------------------------------------------------------------- ijepa_loss

def ijepa_inputs(rng, n, l, d, empty=False):
  mask = patch_mask(rng, n, l, range(n) if empty else ())
  return rows(rng, n, l, d), 2.0 * rows(rng, n, l, d) + 1.0, mask


@pytest.mark.parametrize('n,l,d', [(1, 1, 2), (2, 3, 4), (3, 5, 8), (4, 7, 33)])
def test_ijepa_matches_reference(n, l, d):
  rng = np.random.default_rng(10 * n + l + d)
  for _ in range(2):
    predicted, target, mask = ijepa_inputs(rng, n, l, d)
    want = ijepa_ref(predicted, target, mask)
    for m in (mask, mask.astype(np.float32)):
      got = ijepa(predicted, target, m)
      assert_f32_scalar(got)
      np.testing.assert_allclose(float(got), want, rtol=1e-5, atol=1e-6)


def test_ijepa_layer_norm_epsilon_is_1e_6():
  """Targets whose variance is near 1e-6: the result depends on the epsilon, and is the
  reference's with 1e-6 (not 1e-5, not 0)."""
  rng = np.random.default_rng(20)
  predicted, target, mask = ijepa_inputs(rng, 3, 4, 16)
  small = (1e-3 * rows(rng, 3, 4, 16)).astype(np.float32)
  got = float(ijepa(predicted, small, mask))
  want = ijepa_ref(predicted, small, mask, 1e-6)
  np.testing.assert_allclose(got, want, rtol=1e-4)
  for other in (1e-5, 1e-8):
    assert abs(ijepa_ref(predicted, small, mask, other) - want) > 1e-2 * want


def test_ijepa_target_normalization_and_mask():
  """The loss vanishes when the prediction is the normalized target; a per-patch affine change of
  the target (scale > 0) changes nothing; patches outside the mask do not count; a constant
  target patch normalizes to zeros."""
  rng = np.random.default_rng(21)
  predicted, target, mask = ijepa_inputs(rng, 3, 6, 10)
  t64 = f64(target)
  normalized = np.stack([[layer_norm64(t64[i, j]) for j in range(6)] for i in range(3)])
  assert float(ijepa(normalized.astype(np.float32), target, mask)) < 1e-9
  base = float(ijepa(predicted, target, mask))
  scale = (10.0 ** rng.uniform(-0.5, 1, size=(3, 6, 1))).astype(np.float32)
  np.testing.assert_allclose(float(ijepa(predicted, target * scale + rows(rng, 3, 6, 1), mask)),
                             base, rtol=1e-4)
  p2, t2 = predicted.copy(), target.copy()
  p2[~mask] = 100.0
  t2[~mask] = rows(rng, int((~mask).sum()), 10)
  np.testing.assert_allclose(float(ijepa(p2, t2, mask)), base, rtol=1e-6)
  p3 = predicted.copy()
  p3[mask] += 1.0
  assert abs(float(ijepa(p3, target, mask)) - base) > 0.1
  const = target.copy()
  const[0, 0] = 1000.3
  mask[0, 0] = True
  got = float(ijepa(predicted, const, mask))
  want = ijepa_ref(predicted, const, mask)  # the constant patch contributes mean(predicted^2)
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_ijepa_gathered_targets_are_the_mse():
  """[N, M, D] gathered representations with an all-ones mask: the mean over every element of
  the squared error against the layer-normalized target."""
  rng = np.random.default_rng(22)
  predicted, target, _ = ijepa_inputs(rng, 4, 5, 12)
  t = f64(target)
  t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, keepdims=True) + 1e-6)
  want = np.mean((f64(predicted) - t) ** 2)
  np.testing.assert_allclose(float(ijepa(predicted, target, np.ones((4, 5), bool))), want,
                             rtol=1e-5)


def test_ijepa_grad_and_empty_mask():
  """The gradient w.r.t. the prediction equals float64 central differences; none reaches the
  target; an empty mask gives 0 with zero, finite gradients."""
  rng = np.random.default_rng(23)
  predicted, target, mask = ijepa_inputs(rng, 2, 3, 4)
  val, (gp, gt) = ijepa_grad(predicted, target, mask)
  np.testing.assert_allclose(float(val), ijepa_ref(predicted, target, mask), rtol=1e-5)
  ref = num_grad(lambda v: ijepa_ref(v, target, mask), predicted)
  assert np.abs(ref).max() > 1e-2
  np.testing.assert_allclose(np.asarray(gp), ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())
  np.testing.assert_array_equal(np.asarray(gt), 0.0)
  val, (gp, gt) = ijepa_grad(predicted, target, np.zeros((2, 3), bool))
  assert float(val) == 0.0
  np.testing.assert_array_equal(np.asarray(gp), 0.0)
  assert_finite((gp, gt))


def test_ijepa_jit_equals_eager_and_bf16():
  rng = np.random.default_rng(24)
  predicted, target, mask = ijepa_inputs(rng, 4, 6, 32)
  eager = losses.ijepa_loss(predicted, target, mask)
  assert_f32_scalar(eager)
  np.testing.assert_allclose(float(ijepa(predicted, target, mask)), float(eager), rtol=1e-6)
  (pb, tb), (pr, tr) = bf16_pair(predicted, target)
  got = ijepa(pb, tb, mask)
  assert_f32_scalar(got)
  np.testing.assert_allclose(float(got), ijepa_ref(pr, tr, mask), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(got), float(eager), rtol=BF16_RTOL)


@pytest.mark.parametrize('shapes,name', [
    (((4, 3), (4, 3), (4,)), 'predicted'),
    (((2, 4, 3), (2, 4, 5), (2, 4)), 'target'),
    (((2, 4, 3), (2, 4, 3), (2, 4, 3)), 'mask'),
    (((2, 4, 3), (2, 4, 3), (2, 3)), 'mask'),
])
def test_ijepa_bad_input_names_argument(shapes, name):
  raises_naming(losses.ijepa_loss, [np.ones(s, np.float32) for s in shapes], name)


# -------------------------------------------------------------------------------- return types

def test_return_structure():
  """Losses: float32 scalars; the centre keeps its shape; the Sinkhorn targets are [N, K]."""
  a = lambda *s, dtype=jnp.float32: jax.ShapeDtypeStruct(s, dtype)
  n, l, k, d = 3, 4, 5, 6
  for f, args in ((losses.ibot_patch_loss, (a(n, l, k), a(n, l, k), a(n, l, dtype=bool), a(k))),
                  (losses.koleo_loss, (a(n, d),)),
                  (losses.ijepa_loss, (a(n, l, d), a(n, l, d), a(n, l))),
                  (losses.koleo_loss, (a(n, d, dtype=jnp.bfloat16),))):
    out = jax.eval_shape(f, *args)
    assert (out.shape, out.dtype) == ((), jnp.float32), f
  out = jax.eval_shape(losses.ibot_patch_center, a(1, k), a(n, l, k), a(n, l))
  assert (out.shape, out.dtype) == ((1, k), jnp.float32)
  out = jax.eval_shape(lambda x: losses.sinkhorn_knopp_teacher(x, teacher_temp=0.1), a(n, k))
  assert (out.shape, out.dtype) == ((n, k), jnp.float32)
