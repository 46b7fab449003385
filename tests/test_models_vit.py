"""ViT backbone: shapes, sin-cos positions, MAE / SimMIM masking, init, bf16, drop path, jit."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl.losses.masked import patchify
from jssl.models.pos_embed import sincos_2d
from jssl.models.vit import (VIT_CONFIGS, Block, LayerScale, ViT, drop_path, gelu, vit,
                             vit_config)

P, S, D = 4, 32, 64  # patch, image size, width: an 8x8 grid, L = 64
L = (S // P)**2
small = functools.partial(ViT, width=D, depth=2, num_heads=4, patch_size=P)


def images(n=2, size=S, seed=0):
  return jax.random.normal(jax.random.key(seed), (n, size, size, 3))


@functools.lru_cache(maxsize=None)
def _jitted(model):
  return jax.jit(model.apply, static_argnums=2)


def run(model, v, x, train=False, **kw):
  """`model.apply(v, x, train, **kw)`, jitted once per model (compiling beats op-by-op here)."""
  return _jitted(model)(v, x, train, **kw)


@pytest.fixture(scope='module')
def model_and_vars():
  """One init (the costly compile) shared by every test: pool, drop path, dtype and the mask
  token's use add no parameters, so the same variables serve all those variants."""
  model = small(use_mask_token=True)
  key = jax.random.key(0, impl='rbg')  # compiles in half threefry's time; same distributions
  return model, jax.jit(functools.partial(model.init, train=False))(key, images())


def mae_sincos(embed_dim, grid_size):
  """MAE's get_2d_sincos_pos_embed (models/pos_embed.py), transcribed, with cls_token=True."""
  def one_d(dim, pos):
    omega = np.arange(dim // 2, dtype=np.float64)
    omega /= dim / 2.
    omega = 1. / 10000**omega
    out = np.einsum('m,d->md', pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)
  grid_h = np.arange(grid_size, dtype=np.float32)
  grid_w = np.arange(grid_size, dtype=np.float32)
  grid = np.stack(np.meshgrid(grid_w, grid_h), axis=0).reshape([2, 1, grid_size, grid_size])
  emb = np.concatenate([one_d(embed_dim // 2, grid[0]), one_d(embed_dim // 2, grid[1])], axis=1)
  return np.concatenate([np.zeros([1, embed_dim]), emb], axis=0)


def test_configs():
  assert vit_config('vit_tiny') == dict(width=192, depth=12, num_heads=3)
  assert vit_config('vit_small') == dict(width=384, depth=12, num_heads=6)
  assert vit_config('vit_base') == dict(width=768, depth=12, num_heads=12)
  assert vit_config('vit_large') == dict(width=1024, depth=24, num_heads=16)
  m = vit('vit_tiny', patch_size=8, pool='mean', dtype=jnp.bfloat16)
  assert (m.width, m.depth, m.num_heads, m.patch_size, m.pool) == (192, 12, 3, 8, 'mean')
  assert set(VIT_CONFIGS) == {'vit_tiny', 'vit_small', 'vit_base', 'vit_large'}
  with pytest.raises(ValueError, match='unknown ViT'):
    vit('vit_huge')


def test_vit_b16_parameter_count():
  shapes = jax.eval_shape(lambda: vit('vit_base').init(jax.random.key(0),
                                                       jnp.zeros((1, 224, 224, 3)), False))
  n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))
  # timm's vit_base_patch16_224 without head is 85,798,656 incl. a 197 x 768 learned position
  # table; ours is a fixed sin-cos constant, not a parameter.
  assert n == 85_798_656 - 197 * 768 == 85_647_360


@pytest.mark.parametrize('pool,cls_token,pooled_shape', [
    ('cls', True, (2, D)), ('mean', True, (2, D)), ('mean', False, (2, D)),
    ('none', True, (2, 1 + L, D)), ('none', False, (2, L, D))])
def test_output_shapes(model_and_vars, pool, cls_token, pooled_shape):
  _, v = model_and_vars
  if not cls_token:
    v = {'params': {k: a for k, a in v['params'].items() if k != 'cls'}}
  apply = functools.partial(small(pool=pool, class_token=cls_token).apply, train=False)
  out = jax.eval_shape(apply, v, images())
  assert out['tokens'].shape == (2, 1 + L if cls_token else L, D)
  assert out['patch_tokens'].shape == (2, L, D)
  assert out['pooled'].shape == pooled_shape


def test_pooled_values(model_and_vars):
  model, v = model_and_vars
  cls = run(model, v, images())
  assert model.pool == 'cls'
  np.testing.assert_array_equal(cls['pooled'], cls['tokens'][:, 0])
  np.testing.assert_array_equal(cls['patch_tokens'], cls['tokens'][:, 1:])
  mean = run(small(pool='mean', use_mask_token=True), v, images())
  np.testing.assert_array_equal(mean['tokens'], cls['tokens'])
  np.testing.assert_allclose(mean['pooled'], cls['tokens'][:, 1:].mean(1), rtol=1e-5, atol=1e-5)


def test_sincos_matches_mae_and_cls_row_is_zero():
  for dim, g in ((64, 8), (768, 14)):
    table = sincos_2d(dim, g, g, cls_token=True)
    assert table.shape == (1 + g * g, dim) and table.dtype == np.float32
    np.testing.assert_allclose(table, mae_sincos(dim, g), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(table[0], 0)
  # Rectangular grid: first half of the channels follows the column, second half the row.
  t = sincos_2d(16, 3, 5).reshape(3, 5, 16)
  np.testing.assert_array_equal(t[:, :, :8], np.broadcast_to(t[:1, :, :8], (3, 5, 8)))
  np.testing.assert_array_equal(t[:, :, 8:], np.broadcast_to(t[:, :1, 8:], (3, 5, 8)))
  np.testing.assert_allclose(t[2, 4], sincos_2d(16, 5, 5)[2 * 5 + 4], atol=1e-7)


def test_embedding_is_patchify_dense_plus_sincos(model_and_vars):
  """depth 0: tokens = LayerNorm([cls; patchify(x) @ W + b + pos]), W the kernel as [p*p*C, D]."""
  _, v = model_and_vars
  p = {k: v['params'][k] for k in ('patch_embed', 'cls', 'norm')}
  x = images()
  out = run(ViT(width=D, depth=0, num_heads=4, patch_size=P), {'params': p}, x)
  w = p['patch_embed']['kernel']
  assert w.shape == (P, P, 3, D)
  e = patchify(x, P) @ w.reshape(-1, D) + p['patch_embed']['bias']
  conv = jax.lax.conv_general_dilated(x, w, (P, P), 'VALID',
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  np.testing.assert_allclose(e, conv.reshape(2, L, D), rtol=1e-5, atol=1e-5)
  e = jnp.concatenate([jnp.broadcast_to(p['cls'], (2, 1, D)), e], 1) + sincos_2d(D, 8, 8, True)
  mu, var = e.mean(-1, keepdims=True), e.var(-1, keepdims=True)
  np.testing.assert_allclose(out['tokens'], (e - mu) / np.sqrt(var + 1e-6), rtol=1e-4, atol=1e-4)


def test_init(model_and_vars):
  _, v = model_and_vars
  p = v['params']
  for tok in ('cls', 'mask_token'):
    assert p[tok].shape == (1, 1, D) and 0.01 < float(jnp.std(p[tok])) < 0.03
  limit = np.sqrt(6 / (P * P * 3 + D))  # xavier on the [p*p*C, D] view
  k = p['patch_embed']['kernel']
  assert 0.9 * limit < float(jnp.max(jnp.abs(k))) <= limit
  qkv = p['block0']['attn']['qkv']['kernel']  # one fused [D, 3D] matrix, as in MAE
  assert qkv.shape == (D, 3 * D)
  assert 0.9 * np.sqrt(6 / (4 * D)) < float(jnp.max(jnp.abs(qkv))) <= np.sqrt(6 / (4 * D))
  fc1 = p['block1']['mlp']['fc1']['kernel']
  assert 0.9 * np.sqrt(6 / (5 * D)) < float(jnp.max(jnp.abs(fc1))) <= np.sqrt(6 / (5 * D))
  for path, leaf in jax.tree_util.tree_leaves_with_path(p):
    name = jax.tree_util.keystr(path)
    assert leaf.dtype == jnp.float32
    if name.endswith("['bias']"):
      np.testing.assert_array_equal(leaf, 0, err_msg=name)
    if name.endswith("['scale']"):
      np.testing.assert_array_equal(leaf, 1, err_msg=name)
  assert 'ls1' not in p['block0']
  ls = small(layerscale_init=1e-4)
  shapes = jax.eval_shape(functools.partial(ls.init, train=False), jax.random.key(0),
                          images())['params']['block1']
  assert shapes['ls1']['scale'].shape == shapes['ls2']['scale'].shape == (D,)
  gamma = LayerScale(1e-4).init(jax.random.key(0), jnp.zeros((1, D)))['params']['scale']
  np.testing.assert_array_equal(gamma, np.full((D,), 1e-4, np.float32))


def test_ids_keep_blocks_see_only_kept_tokens(model_and_vars):
  model, v = model_and_vars
  ids_keep = jnp.stack([jnp.array([3, 0, 17, 40, 63]), jnp.array([5, 6, 7, 8, 9])])
  capture = functools.partial(model.apply, train=False, ids_keep=ids_keep,
                              capture_intermediates=True)
  out, state = jax.eval_shape(capture, v, images())
  assert out['tokens'].shape == (2, 1 + 5, D)
  assert out['patch_tokens'].shape == (2, 5, D) and out['pooled'].shape == (2, D)
  # a block's output has its input's shape: the blocks ran on L_keep + 1 tokens
  assert state['intermediates']['block0']['__call__'][0].shape == (2, 6, D)
  assert state['intermediates']['block1']['__call__'][0].shape == (2, 6, D)
  # the gather reads the patches named: keeping one patch L times gives L identical tokens
  sub = run(model, v, images(), ids_keep=ids_keep[:, :1].repeat(L, 1))
  np.testing.assert_allclose(sub['patch_tokens'][:, 1:], sub['patch_tokens'][:, :-1], atol=1e-5)


def test_ids_keep_all_in_order_equals_plain_forward(model_and_vars):
  model, v = model_and_vars
  x = images()
  plain = run(model, v, x)
  kept = run(model, v, x, ids_keep=jnp.tile(jnp.arange(L)[None], (2, 1)))
  for k in plain:
    np.testing.assert_allclose(kept[k], plain[k], rtol=1e-6, atol=1e-6)
  # a permutation of all patches permutes the patch tokens (positions travel with the patches)
  perm = jnp.stack([jax.random.permutation(jax.random.key(i), L) for i in range(2)])
  shuffled = run(model, v, x, ids_keep=perm)
  np.testing.assert_allclose(shuffled['pooled'], plain['pooled'], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(shuffled['patch_tokens'],
                             jnp.take_along_axis(plain['patch_tokens'], perm[..., None], 1),
                             rtol=1e-5, atol=1e-5)


def test_mask_zeros_equals_plain_and_masked_patch_has_no_influence(model_and_vars):
  model, v = model_and_vars
  x = images()
  plain = run(model, v, x)
  for zeros in (jnp.zeros((2, L), bool), jnp.zeros((2, L), jnp.float32)):
    out = run(model, v, x, mask=zeros)
    for k in plain:
      np.testing.assert_allclose(out[k], plain[k], rtol=1e-6, atol=1e-6)
  mask = jnp.zeros((2, L), bool).at[:, 10].set(True).at[1, 63].set(True)  # patch 10: row 1, col 2
  f = lambda im: jnp.sum(model.apply(v, im, False, mask=mask)['tokens'] ** 2)
  g = jax.jit(jax.grad(f))(x)
  assert np.all(np.asarray(g[:, 4:8, 8:12]) == 0)  # exactly zero
  assert np.all(np.asarray(g[1, 28:32, 28:32]) == 0)
  assert float(jnp.min(jnp.sum(jnp.abs(patchify(g, P)), -1)[0, jnp.arange(L) != 10])) > 0
  # the masked patch's pixels can change freely; a fully masked image ignores its pixels
  y = x.at[:, 4:8, 8:12].set(100.)
  np.testing.assert_array_equal(run(model, v, y, mask=mask)['tokens'],
                                run(model, v, x, mask=mask)['tokens'])
  full = jnp.ones((2, L), jnp.float32)
  np.testing.assert_allclose(run(model, v, x, mask=full)['tokens'],
                             run(model, v, images(seed=5), mask=full)['tokens'], atol=1e-6)
  assert not np.allclose(run(model, v, x, mask=mask)['pooled'], plain['pooled'])


def test_bf16_compute_float32_params(model_and_vars):
  _, v = model_and_vars
  x = images()
  m32 = small(pool='mean', use_mask_token=True)
  m16 = small(pool='mean', use_mask_token=True, dtype=jnp.bfloat16)
  shapes = jax.eval_shape(functools.partial(m16.init, train=False), jax.random.key(0), x)
  assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(shapes))
  o16, o32 = run(m16, v, x), run(m32, v, x)
  assert o16['tokens'].dtype == jnp.bfloat16
  for k in ('tokens', 'pooled'):  # LayerNorm'd outputs, unit scale
    err = np.abs(np.asarray(o16[k], np.float32) - np.asarray(o32[k]))
    assert err.mean() < 0.02 and err.max() < 0.2, (k, err.mean(), err.max())


def test_drop_path_is_per_example_and_scaled():
  z = np.asarray(jax.jit(drop_path, static_argnums=1)(jnp.ones((1000, 2, 3)), 0.25,
                                                      jax.random.key(3)))
  assert set(np.unique(z)) <= {0.0, np.float32(1 / 0.75)}  # kept examples scaled by 1 / (1 - p)
  assert np.all(z == z[:, :1, :1]) and 0.7 < np.mean(z[:, 0, 0] != 0) < 0.8  # whole examples


def _uses_rng(model, v, x, train, **kw):
  jaxpr = jax.make_jaxpr(functools.partial(model.apply, train=train, **kw))(v, x)
  return 'random_bits' in str(jaxpr) or 'random_wrap' in str(jaxpr)


def test_drop_path_only_in_train_with_rng(model_and_vars):
  base, v = model_and_vars
  x = images()
  model = small(use_mask_token=True, drop_path_rate=0.5)  # block 1: rate 0.5; kept branches x2
  rng = lambda i: {'dropout': jax.random.key(i)}
  assert not _uses_rng(model, v, x, True)  # train without a 'dropout' rng: deterministic
  assert not _uses_rng(model, v, x, False, rngs=rng(1))  # eval: deterministic
  assert _uses_rng(model, v, x, True, rngs=rng(1))
  ref = run(base, v, x)['tokens']
  a, b, c = (run(model, v, x, True, rngs=rng(i))['tokens'] for i in (1, 2, 3))
  assert not np.allclose(a, ref) and not (np.allclose(a, b) and np.allclose(a, c))
  np.testing.assert_array_equal(a, run(model, v, x, True, rngs=rng(1))['tokens'])
  # rates grow linearly from 0 (first block) to drop_path_rate (last)
  rates = []
  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, Block) and context.method_name == '__call__':
      rates.append(context.module.drop_path_rate)
    return next_fun(*args, **kwargs)
  deep = ViT(width=D, depth=5, num_heads=4, patch_size=P, drop_path_rate=0.4)
  with nn.intercept_methods(record):
    jax.eval_shape(functools.partial(deep.init, train=True), jax.random.key(0), images())
  np.testing.assert_allclose(rates, [0, 0.1, 0.2, 0.3, 0.4], atol=1e-7)


def test_other_resolution_same_params(model_and_vars):
  model, v = model_and_vars
  out = run(model, v, images(size=48))
  assert out['tokens'].shape == (2, 1 + 144, D) and out['pooled'].shape == (2, D)
  assert np.all(np.isfinite(out['tokens']))
  rect = jax.eval_shape(functools.partial(model.apply, train=False), v,
                        jnp.zeros((1, 16, 40, 3)))
  assert rect['patch_tokens'].shape == (1, 40, D)


def test_errors(model_and_vars):
  model, v = model_and_vars
  shape = lambda m, x, **kw: jax.eval_shape(functools.partial(m.apply, train=False, **kw), v, x)
  with pytest.raises(ValueError, match='multiple of patch_size'):
    shape(model, jnp.zeros((1, 30, 32, 3)))
  with pytest.raises(ValueError, match='mask must be'):
    shape(model, images(), mask=jnp.zeros((2, L - 1)))
  with pytest.raises(ValueError, match='use_mask_token'):
    shape(small(), images(), mask=jnp.zeros((2, L)))
  with pytest.raises(TypeError, match='integer'):
    shape(model, images(), ids_keep=jnp.zeros((2, 3)))
  with pytest.raises(ValueError, match='pool must be'):
    shape(small(pool='max'), images())
  with pytest.raises(ValueError, match='class_token'):
    shape(small(class_token=False), images())


def test_token_mask_equals_the_encoder_on_the_visible_patches_alone():
  """I-JEPA's context encoder: a per-example key mask gives what the kept patches alone give."""
  model = ViT(width=32, depth=2, num_heads=2, patch_size=4, pool='mean', class_token=True)
  x = jax.random.normal(jax.random.PRNGKey(0), (3, 16, 16, 3))
  variables = model.init(jax.random.PRNGKey(1), x, False)
  kept = np.array([[0, 3, 5, 9, 10], [1, 2, 3, 4, 15], [6, 7, 8, 11, 12]])
  visible = np.zeros((3, 16), bool)
  np.put_along_axis(visible, kept, True, axis=1)
  masked = model.apply(variables, x, False, token_mask=visible)
  alone = model.apply(variables, x, False, ids_keep=jnp.asarray(kept))
  np.testing.assert_allclose(np.take_along_axis(np.asarray(masked['patch_tokens']),
                                                kept[..., None], axis=1),
                             alone['patch_tokens'], atol=2e-5)
  np.testing.assert_allclose(masked['tokens'][:, 0], alone['tokens'][:, 0], atol=2e-5)  # CLS
  everything = model.apply(variables, x, False)
  assert np.abs(np.asarray(everything['tokens'][:, 0] - masked['tokens'][:, 0])).max() > 1e-3
  # Gathered slots with a validity mask (I-JEPA's fixed-length context): padding slots change
  # nothing the valid ones give.
  padded = np.concatenate([kept, [[1, 2], [0, 5], [9, 3]]], axis=1)
  valid = np.arange(7) < 5
  gathered = model.apply(variables, x, False, ids_keep=jnp.asarray(padded),
                         token_mask=jnp.broadcast_to(valid, (3, 7)))
  np.testing.assert_allclose(gathered['patch_tokens'][:, :5], alone['patch_tokens'], atol=2e-5)
  np.testing.assert_allclose(gathered['tokens'][:, 0], alone['tokens'][:, 0], atol=2e-5)
  with pytest.raises(ValueError, match='shape of ids_keep'):
    model.apply(variables, x, False, ids_keep=jnp.asarray(padded), token_mask=visible)


def test_register_tokens_join_the_blocks_but_not_the_patch_outputs():
  model = ViT(width=32, depth=2, num_heads=2, patch_size=4, pool='mean', num_registers=3)
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  variables = model.init(jax.random.PRNGKey(1), x, False)
  assert variables['params']['registers'].shape == (1, 3, 32)
  out = model.apply(variables, x, False)
  assert out['tokens'].shape == (2, 1 + 3 + 16, 32) and out['patch_tokens'].shape == (2, 16, 32)
  assert out['register_tokens'].shape == (2, 3, 32)
  np.testing.assert_allclose(out['pooled'], out['patch_tokens'].mean(1), atol=1e-6)
  # the registers change what the patches see: other registers, other patch outputs
  shifted = jax.tree.map(lambda a: a, variables)
  shifted['params']['registers'] = variables['params']['registers'] + 1.0
  assert np.abs(np.asarray(model.apply(shifted, x, False)['patch_tokens']
                           - out['patch_tokens'])).max() > 1e-5  # 0 if they were left out


def test_gelu_is_the_exact_gelu_to_float32_round_off():
  """jssl's erf form of the exact GELU against a float64 x * Phi(x), and against flax's erfc form,
  values and gradients; far from the tanh approximation."""
  x = np.linspace(-12, 12, 4001).astype(np.float32)
  want = np.array([0.5 * v * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])
  got = np.asarray(jax.jit(gelu)(x), np.float64)
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-6)
  np.testing.assert_allclose(got, np.asarray(nn.gelu(x, approximate=False)), rtol=0, atol=2e-6)
  grad = np.asarray(jax.jit(jax.vmap(jax.grad(gelu)))(x), np.float64)
  phi = np.exp(-0.5 * x.astype(np.float64) ** 2) / math.sqrt(2 * math.pi)
  cdf = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in x.astype(np.float64)])
  np.testing.assert_allclose(grad, cdf + x * phi, rtol=0, atol=1e-6)
  assert np.abs(got - np.asarray(nn.gelu(x, approximate=True))).max() > 1e-4
