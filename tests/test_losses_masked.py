"""patchify / unpatchify, MAE, SimMIM and BEiT against float64 NumPy references (docs/losses.md).

The references are written from docs/losses.md alone. Tolerances: float32 results are compared with
rtol 1e-5 (atol 1e-6) unless a comment states otherwise.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jssl import losses

RTOL, ATOL = 1e-5, 1e-6
HYP = settings(max_examples=25, deadline=None)

# Jitted entry points (one compile per shape keeps the file fast); the jit tests compare them with
# eager runs.
patchify = jax.jit(losses.patchify, static_argnums=1)
unpatchify = jax.jit(losses.unpatchify, static_argnums=(1, 2, 3))
mae = jax.jit(losses.mae_loss, static_argnames='norm_pix_loss')
mae_grad = jax.jit(jax.grad(lambda p, t, m: losses.mae_loss(p, t, m), argnums=(0, 1)))
simmim = jax.jit(losses.simmim_loss)
simmim_grad = jax.jit(jax.grad(losses.simmim_loss, argnums=(0, 1)))
beit = jax.jit(losses.beit_loss)
beit_grad = jax.jit(jax.grad(losses.beit_loss))


# ----------------------------------------------------------------------------- float64 references

def ref_patchify(images, p):
  n, h, w, c = images.shape
  gh, gw = h // p, w // p
  out = np.zeros((n, gh * gw, p * p * c), images.dtype)
  for i in range(gh):
    for j in range(gw):
      block = images[:, i * p:(i + 1) * p, j * p:(j + 1) * p, :]  # [N, py, px, c]
      out[:, i * gw + j] = block.reshape(n, -1)  # row-major (py, px, c)
  return out


def ref_unpatchify(patches, p, h, w):
  n, _, pp = patches.shape
  c = pp // (p * p)
  gw = w // p
  out = np.zeros((n, h, w, c), patches.dtype)
  for idx in range(patches.shape[1]):
    i, j = divmod(idx, gw)
    out[:, i * p:(i + 1) * p, j * p:(j + 1) * p, :] = patches[:, idx].reshape(n, p, p, c)
  return out


def ref_mae(pred, target, mask, norm_pix_loss=True):
  pred, t = np.asarray(pred, np.float64), np.asarray(target, np.float64)
  if norm_pix_loss:
    t = (t - t.mean(-1, keepdims=True)) / np.sqrt(t.var(-1, ddof=1, keepdims=True) + 1e-6)
  per_patch = np.mean((pred - t) ** 2, axis=-1)
  m = np.asarray(mask, np.float64)
  return np.sum(per_patch * m) / np.sum(m)


def ref_simmim(pred, target, mask):
  pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
  m = np.asarray(mask, np.float64)
  return np.sum(np.abs(pred - target) * m[..., None]) / (np.sum(m) + 1e-5) / pred.shape[-1]


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.sum(np.exp(x - m), -1, keepdims=True))


def ref_beit(logits, tokens, mask):
  lp = _log_softmax(logits)
  n, l, _ = lp.shape
  nll = np.array([[-lp[i, j, tokens[i, j]] for j in range(l)] for i in range(n)])
  m = np.asarray(mask, np.float64)
  return np.sum(nll * m) / np.sum(m)


# ----------------------------------------------------------------------------- helpers

def _rand(seed, *shape, scale=1.0):
  return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _mask(seed, *shape, ratio=0.6):
  m = np.random.default_rng(seed).random(shape) < ratio
  m.reshape(-1)[0] = True  # at least one masked position
  m.reshape(-1)[-1] = False  # at least one visible position
  return m.astype(np.float32)


def _fd_grad(f, x, coords, h=1e-5):
  x = np.asarray(x, np.float64)
  out = []
  for idx in coords:
    xp, xm = x.copy(), x.copy()
    xp[idx] += h
    xm[idx] -= h
    out.append((f(xp) - f(xm)) / (2 * h))
  return np.array(out)


def _assert_raises_naming(fn, args, name):
  """Eagerly and under jit, bad input raises at trace time with a message naming `name`."""
  for g in (fn, jax.jit(fn)):
    with pytest.raises((AssertionError, ValueError, TypeError)) as info:
      g(*args)
    assert re.search(rf'\b{re.escape(name)}\b', str(info.value)), str(info.value)
  return str(info.value)


PATCH_CASES = [(2, 8, 12, 3, 4), (3, 6, 6, 1, 3), (1, 10, 15, 2, 5)]  # N, H, W, C, patch


# ----------------------------------------------------------------------------- patchify

def test_patchify_explicit_layout():
  img = np.arange(4 * 4 * 2, dtype=np.float32).reshape(1, 4, 4, 2)  # value = (y * 4 + x) * 2 + c
  got = np.asarray(patchify(img, 2))
  assert got.shape == (1, 4, 8)

  def px(y, x):
    return [(y * 4 + x) * 2, (y * 4 + x) * 2 + 1]

  # Patch (i, j) is number i * 2 + j; inside it (py, px, c) row-major.
  for i in range(2):
    for j in range(2):
      want = sum((px(2 * i + py, 2 * j + qx) for py in range(2) for qx in range(2)), [])
      np.testing.assert_array_equal(got[0, i * 2 + j], want)
  np.testing.assert_array_equal(got[0, 1], [4, 5, 6, 7, 12, 13, 14, 15])  # written out once


@pytest.mark.parametrize('n,h,w,c,p', PATCH_CASES)
def test_patchify_matches_reference_and_round_trips(n, h, w, c, p):
  x = _rand(n * h, n, h, w, c)
  patches = np.asarray(patchify(x, p))
  np.testing.assert_array_equal(patches, ref_patchify(x, p))
  np.testing.assert_array_equal(unpatchify(patches, p, h, w), x)
  y = _rand(n * h + 1, n, (h // p) * (w // p), p * p * c)
  np.testing.assert_array_equal(unpatchify(y, p, h, w), ref_unpatchify(y, p, h, w))
  np.testing.assert_array_equal(patchify(unpatchify(y, p, h, w), p), y)


def test_patchify_jit_eager_bf16_and_gradient():
  n, h, w, c, p = PATCH_CASES[0]
  x = _rand(1, n, h, w, c)
  np.testing.assert_array_equal(losses.patchify(x, p), patchify(x, p))
  np.testing.assert_array_equal(losses.unpatchify(patchify(x, p), p, h, w), x)
  b = jnp.asarray(x, jnp.bfloat16)
  np.testing.assert_array_equal(np.asarray(patchify(b, p), np.float32),
                                ref_patchify(np.asarray(b, np.float32), p))
  # A permutation: the gradient of <patchify(x), w> is unpatchify(w).
  wts = _rand(2, n, (h // p) * (w // p), p * p * c)
  g = jax.jit(jax.grad(lambda v: jnp.sum(losses.patchify(v, p) * wts)))(x)
  np.testing.assert_array_equal(g, ref_unpatchify(wts, p, h, w))


@HYP
@given(case=st.sampled_from(PATCH_CASES), seed=st.integers(0, 2**16))
def test_patchify_round_trip_property(case, seed):
  n, h, w, c, p = case
  x = _rand(seed, n, h, w, c)
  np.testing.assert_array_equal(unpatchify(patchify(x, p), p, h, w), x)
  np.testing.assert_array_equal(patchify(x, p), ref_patchify(x, p))


def test_patchify_bad_input():
  _assert_raises_naming(lambda x: losses.patchify(x, 4), (np.zeros((8, 8, 3), np.float32),),
                        'images')
  _assert_raises_naming(lambda x: losses.patchify(x, 3), (np.zeros((2, 8, 9, 3), np.float32),),
                        'patch')
  _assert_raises_naming(lambda x: losses.unpatchify(x, 4, 8, 8), (np.zeros((2, 4, 48, 1)),),
                        'patches')
  _assert_raises_naming(lambda x: losses.unpatchify(x, 4, 8, 8), (np.zeros((2, 5, 48)),),
                        'patches')
  _assert_raises_naming(lambda x: losses.unpatchify(x, 4, 10, 8), (np.zeros((2, 4, 48)),),
                        'height')


# ----------------------------------------------------------------------------- MAE

MAE_CASES = [(0, 2, 7, 12), (1, 3, 16, 48)]  # seed, N, L, P


@pytest.mark.parametrize('norm', [True, False])
@pytest.mark.parametrize('seed,n,l,p', MAE_CASES)
def test_mae_matches_reference(seed, n, l, p, norm):
  pred, target = _rand(seed, n, l, p), _rand(seed + 1, n, l, p, scale=3.0) + 2.0
  mask = _mask(seed + 2, n, l)
  loss = mae(pred, target, mask, norm_pix_loss=norm)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, ref_mae(pred, target, mask, norm), rtol=RTOL, atol=ATOL)


def test_mae_default_is_norm_pix_and_norm_matters():
  seed, n, l, p = MAE_CASES[0]
  pred, target, mask = _rand(3, n, l, p), _rand(4, n, l, p, scale=3.0) + 2.0, _mask(5, n, l)
  on = mae(pred, target, mask, norm_pix_loss=True)
  off = mae(pred, target, mask, norm_pix_loss=False)
  np.testing.assert_allclose(mae(pred, target, mask), on, rtol=1e-7)
  assert abs(float(on) - float(off)) > 0.1
  # A target already normalized per patch (mean 0, unbiased variance 1) is left (almost) unchanged.
  t = target - target.mean(-1, keepdims=True)
  t = (t / t.std(-1, ddof=1, keepdims=True)).astype(np.float32)
  np.testing.assert_allclose(mae(pred, t, mask, norm_pix_loss=True),
                             mae(pred, t, mask, norm_pix_loss=False), rtol=1e-5)


@pytest.mark.parametrize('norm', [True, False])
def test_mae_only_masked_patches_count(norm):
  _, n, l, p = MAE_CASES[0]
  pred, target, mask = _rand(6, n, l, p), _rand(7, n, l, p), _mask(8, n, l)
  base = float(mae(pred, target, mask, norm_pix_loss=norm))
  vis = mask == 0
  pred2, target2 = pred.copy(), target.copy()
  pred2[vis] = _rand(9, int(vis.sum()), p, scale=10.0)
  target2[vis] = _rand(10, int(vis.sum()), p, scale=10.0)
  np.testing.assert_allclose(mae(pred2, target2, mask, norm_pix_loss=norm), base, rtol=1e-6)
  pred3 = pred.copy()
  pred3[mask == 1] += 1.0  # a masked patch does count
  assert abs(float(mae(pred3, target, mask, norm_pix_loss=norm)) - base) > 0.1
  # Same for a boolean mask.
  np.testing.assert_allclose(mae(pred, target, mask.astype(bool), norm_pix_loss=norm), base,
                             rtol=1e-6)


def test_mae_gradient_matches_finite_differences_and_is_zero_on_visible_patches():
  _, n, l, p = MAE_CASES[0]
  pred, target, mask = _rand(11, n, l, p), _rand(12, n, l, p), _mask(13, n, l)
  gp, gt = mae_grad(pred, target, mask)
  rng = np.random.default_rng(14)
  coords = [(int(rng.integers(n)), int(rng.integers(l)), int(rng.integers(p))) for _ in range(8)]
  fdp = _fd_grad(lambda x: ref_mae(x, target, mask), pred, coords)
  fdt = _fd_grad(lambda x: ref_mae(pred, x, mask), target, coords)
  np.testing.assert_allclose([gp[c] for c in coords], fdp, rtol=1e-3, atol=1e-5)
  np.testing.assert_allclose([gt[c] for c in coords], fdt, rtol=1e-3, atol=1e-5)
  np.testing.assert_array_equal(np.asarray(gp)[mask == 0], 0.0)
  np.testing.assert_array_equal(np.asarray(gt)[mask == 0], 0.0)


def test_mae_constant_patches_give_finite_gradients():
  _, n, l, p = MAE_CASES[0]
  pred, target, mask = _rand(15, n, l, p), _rand(16, n, l, p), np.ones((n, l), np.float32)
  target[0, :3] = 0.7  # zero-variance target patches (norm_pix divides by sqrt(0 + 1e-6))
  pred[1, 2] = 0.0
  loss = float(mae(pred, target, mask))
  assert np.isfinite(loss)
  np.testing.assert_allclose(loss, ref_mae(pred, target, mask), rtol=RTOL)
  assert all(np.all(np.isfinite(g)) for g in mae_grad(pred, target, mask))
  # A constant patch normalizes to exact zeros, whatever float32 does with its mean (found by
  # hypothesis: 2.7294898 * 5 / 5 rounds off, and / sqrt(1e-6) turned that into a 5e-4 error).
  const = np.full((n, l, p), 2.7294898, np.float32)
  np.testing.assert_allclose(mae(pred, const, mask), np.mean(pred.astype(np.float64) ** 2),
                             rtol=1e-6)


def test_mae_jit_equals_eager_and_bf16():
  _, n, l, p = MAE_CASES[0]
  pred, target, mask = _rand(17, n, l, p), _rand(18, n, l, p), _mask(19, n, l)
  np.testing.assert_allclose(losses.mae_loss(pred, target, mask), mae(pred, target, mask),
                             rtol=1e-6)
  bp, bt = jnp.asarray(pred, jnp.bfloat16), jnp.asarray(target, jnp.bfloat16)
  loss = mae(bp, bt, mask)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(
      loss, mae(np.asarray(bp, np.float32), np.asarray(bt, np.float32), mask), rtol=1e-5)
  np.testing.assert_allclose(loss, mae(pred, target, mask), rtol=2e-2)


@HYP
@given(pred=hnp.arrays(np.float32, (2, 6, 5), elements=st.floats(-3, 3, width=32)),
       target=hnp.arrays(np.float32, (2, 6, 5), elements=st.floats(-3, 3, width=32)),
       mask=hnp.arrays(np.bool_, (2, 6)), noise=st.integers(0, 2**16))
def test_mae_properties(pred, target, mask, noise):
  assume(mask.any())
  loss = float(mae(pred, target, mask))
  assert loss >= 0
  np.testing.assert_allclose(loss, ref_mae(pred, target, mask), rtol=1e-4, atol=1e-5)
  pred2 = pred.copy()
  pred2[~mask] += _rand(noise, int((~mask).sum()), 5)
  np.testing.assert_allclose(mae(pred2, target, mask), loss, rtol=1e-6, atol=0)


def test_mae_bad_input():
  x = np.zeros((2, 4, 6), np.float32)
  m = np.ones((2, 4), np.float32)
  _assert_raises_naming(losses.mae_loss, (x, np.zeros((2, 4, 5), np.float32), m), 'target')
  _assert_raises_naming(losses.mae_loss, (x[0], x[0], m), 'pred')
  _assert_raises_naming(losses.mae_loss, (x, x, np.ones((2, 5), np.float32)), 'mask')
  _assert_raises_naming(losses.mae_loss, (x, x, np.ones((2, 4, 1), np.float32)), 'mask')


# ----------------------------------------------------------------------------- SimMIM

SIMMIM_CASES = [(0, 2, 8, 12, 3), (1, 3, 5, 7, 1)]  # seed, N, H, W, C


@pytest.mark.parametrize('seed,n,h,w,c', SIMMIM_CASES)
def test_simmim_matches_reference(seed, n, h, w, c):
  pred, target, mask = _rand(seed, n, h, w, c), _rand(seed + 1, n, h, w, c), _mask(seed, n, h, w)
  loss = simmim(pred, target, mask)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, ref_simmim(pred, target, mask), rtol=RTOL, atol=ATOL)


def test_simmim_only_masked_pixels_count_and_gradient():
  _, n, h, w, c = SIMMIM_CASES[0]
  pred, target, mask = _rand(20, n, h, w, c), _rand(21, n, h, w, c), _mask(22, n, h, w)
  base = float(simmim(pred, target, mask))
  vis = mask == 0
  pred2, target2 = pred.copy(), target.copy()
  pred2[vis] = _rand(23, int(vis.sum()), c, scale=10.0)
  target2[vis] = 5.0
  np.testing.assert_allclose(simmim(pred2, target2, mask), base, rtol=1e-6)
  pred3 = pred.copy()
  pred3[mask == 1] += 1.0
  assert abs(float(simmim(pred3, target, mask)) - base) > 0.1
  np.testing.assert_allclose(simmim(pred, target, mask.astype(bool)), base, rtol=1e-6)
  # d/dpred of sum(|pred - target| mask) / (sum(mask) + 1e-5) / C.
  gp, gt = simmim_grad(pred, target, mask)
  want = np.sign(pred - target) * mask[..., None] / (mask.sum() + 1e-5) / c
  np.testing.assert_allclose(gp, want, rtol=1e-5, atol=1e-9)
  np.testing.assert_allclose(gt, -want, rtol=1e-5, atol=1e-9)


def test_simmim_jit_equals_eager_and_bf16():
  _, n, h, w, c = SIMMIM_CASES[0]
  pred, target, mask = _rand(24, n, h, w, c), _rand(25, n, h, w, c), _mask(26, n, h, w)
  np.testing.assert_allclose(losses.simmim_loss(pred, target, mask), simmim(pred, target, mask),
                             rtol=1e-6)
  bp, bt = jnp.asarray(pred, jnp.bfloat16), jnp.asarray(target, jnp.bfloat16)
  loss = simmim(bp, bt, mask)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(
      loss, simmim(np.asarray(bp, np.float32), np.asarray(bt, np.float32), mask), rtol=1e-5)
  np.testing.assert_allclose(loss, simmim(pred, target, mask), rtol=1e-2)


@HYP
@given(pred=hnp.arrays(np.float32, (2, 4, 6, 2), elements=st.floats(-3, 3, width=32)),
       target=hnp.arrays(np.float32, (2, 4, 6, 2), elements=st.floats(-3, 3, width=32)),
       mask=hnp.arrays(np.bool_, (2, 4, 6)), noise=st.integers(0, 2**16))
def test_simmim_properties(pred, target, mask, noise):
  loss = float(simmim(pred, target, mask))
  assert loss >= 0
  np.testing.assert_allclose(loss, ref_simmim(pred, target, mask), rtol=1e-4, atol=1e-5)
  pred2 = pred.copy()
  pred2[~mask] += _rand(noise, int((~mask).sum()), 2)
  np.testing.assert_allclose(simmim(pred2, target, mask), loss, rtol=1e-6, atol=0)


def test_simmim_bad_input():
  x = np.zeros((2, 8, 8, 3), np.float32)
  _assert_raises_naming(losses.simmim_loss, (x, np.zeros((2, 8, 8, 1)), np.ones((2, 8, 8))),
                        'target')
  _assert_raises_naming(losses.simmim_loss, (x, x, np.ones((2, 2, 2))), 'mask')  # patch-level
  _assert_raises_naming(losses.simmim_loss, (x, x, np.ones((2, 8, 8, 3))), 'mask')
  _assert_raises_naming(losses.simmim_loss, (x[0], x[0], np.ones((8, 8))), 'pred')


# ----------------------------------------------------------------------------- BEiT

BEIT_CASES = [(0, 2, 7, 11), (1, 3, 16, 64)]  # seed, N, L, V


def _tokens(seed, n, l, v):
  return np.random.default_rng(seed).integers(0, v, size=(n, l)).astype(np.int32)


@pytest.mark.parametrize('seed,n,l,v', BEIT_CASES)
def test_beit_matches_reference(seed, n, l, v):
  logits, tokens, mask = _rand(seed, n, l, v, scale=3.0), _tokens(seed, n, l, v), _mask(seed, n, l)
  loss = beit(logits, tokens, mask)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, ref_beit(logits, tokens, mask), rtol=RTOL, atol=ATOL)


def test_beit_only_masked_positions_count_and_gradient():
  _, n, l, v = BEIT_CASES[0]
  logits, tokens, mask = _rand(30, n, l, v), _tokens(31, n, l, v), _mask(32, n, l)
  base = float(beit(logits, tokens, mask))
  vis = mask == 0
  logits2, tokens2 = logits.copy(), tokens.copy()
  logits2[vis] = _rand(33, int(vis.sum()), v, scale=10.0)
  tokens2[vis] = (tokens2[vis] + 1) % v
  np.testing.assert_allclose(beit(logits2, tokens2, mask), base, rtol=1e-6)
  tokens3 = tokens.copy()
  tokens3[mask == 1] = (tokens3[mask == 1] + 1) % v  # a masked token does count
  assert abs(float(beit(logits, tokens3, mask)) - base) > 1e-2
  np.testing.assert_allclose(beit(logits, tokens, mask.astype(bool)), base, rtol=1e-6)
  # d/dlogits = mask * (softmax - onehot(tokens)) / sum(mask).
  g = beit_grad(logits, tokens, mask)
  want = (np.exp(_log_softmax(logits)) - np.eye(v)[tokens]) * mask[..., None] / mask.sum()
  np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-7)


def test_beit_jit_equals_eager_and_bf16():
  _, n, l, v = BEIT_CASES[0]
  logits, tokens, mask = _rand(34, n, l, v, scale=3.0), _tokens(35, n, l, v), _mask(36, n, l)
  np.testing.assert_allclose(losses.beit_loss(logits, tokens, mask), beit(logits, tokens, mask),
                             rtol=1e-6)
  b = jnp.asarray(logits, jnp.bfloat16)
  loss = beit(b, tokens, mask)
  assert loss.dtype == jnp.float32 and loss.shape == ()
  np.testing.assert_allclose(loss, beit(np.asarray(b, np.float32), tokens, mask), rtol=1e-5)
  np.testing.assert_allclose(loss, beit(logits, tokens, mask), rtol=2e-2)
  large = (logits * 1e3).astype(np.float32)  # finite for very confident logits
  assert np.isfinite(float(beit(large, tokens, mask)))
  np.testing.assert_allclose(beit(large, tokens, mask), ref_beit(large, tokens, mask), rtol=1e-5)


@HYP
@given(logits=hnp.arrays(np.float32, (2, 5, 6), elements=st.floats(-5, 5, width=32)),
       tokens=hnp.arrays(np.int32, (2, 5), elements=st.integers(0, 5)),
       mask=hnp.arrays(np.bool_, (2, 5)))
def test_beit_properties(logits, tokens, mask):
  assume(mask.any())
  loss = float(beit(logits, tokens, mask))
  assert loss >= 0
  np.testing.assert_allclose(loss, ref_beit(logits, tokens, mask), rtol=1e-4, atol=1e-5)
  # Adding a constant to every logit of a position changes nothing.
  np.testing.assert_allclose(beit(logits + 2.5, tokens, mask), loss, rtol=1e-4, atol=1e-5)


def test_beit_bad_input():
  logits, tokens = np.zeros((2, 4, 8), np.float32), np.zeros((2, 4), np.int32)
  mask = np.ones((2, 4), np.float32)
  _assert_raises_naming(losses.beit_loss, (logits, tokens.astype(np.float32), mask), 'tokens')
  msg = _assert_raises_naming(losses.beit_loss, (logits, tokens, np.ones((2, 5))), 'mask')
  assert 'tokens' not in msg  # names the argument at fault, not its neighbour
  msg = _assert_raises_naming(losses.beit_loss, (logits, np.zeros((2, 5), np.int32), mask),
                              'tokens')
  assert 'mask' not in msg
  _assert_raises_naming(losses.beit_loss, (logits, np.zeros((2, 4, 1), np.int32), mask), 'tokens')
  _assert_raises_naming(losses.beit_loss, (logits[0], tokens, mask), 'logits')
