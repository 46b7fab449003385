"""benchmarks/vit_ops.py: its attention forms compute softmax attention, its ops compose into
jssl's ViT block, and a run times every chosen op."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scripts

from jssl.models import vit

bench = scripts.load('vit_ops')


def reference_attention(q, k, v):
  """float64 NumPy: per head, softmax(q k^T / sqrt(Dh)) v, heads concatenated."""
  q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
  n, t, h, dh = q.shape
  logits = np.einsum('nqhd,nkhd->nhqk', q, k) / np.sqrt(dh)
  w = np.exp(logits - logits.max(-1, keepdims=True))
  w /= w.sum(-1, keepdims=True)
  return np.einsum('nhqk,nkhd->nqhd', w, v).reshape(n, t, h * dh)


def test_attention_forms_are_softmax_attention():
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.standard_normal((2, 5, 3, 4)), jnp.float32) for _ in range(3))
  want = reference_attention(q, k, v)
  np.testing.assert_allclose(bench.attention_xla(q, k, v), want, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(bench.attention_einsum(q, k, v), want, rtol=1e-5, atol=1e-5)


def test_the_timed_ops_compose_into_the_block():
  """LayerNorm -> qkv -> attention core -> proj -> residual, LayerNorm -> fc1 -> GELU -> fc2 ->
  residual with the block's own parameters gives the block's output."""
  n, t, d, h = 2, 5, 8, 2
  ops = bench.jax_ops(n, t, d, h)
  block = ops['block'][0]
  x = jnp.asarray(np.random.default_rng(1).standard_normal((n, t, d)), jnp.float32)
  p = block.init(jax.random.PRNGKey(0), x)['params']
  apply = lambda name, params, *a: ops[name][0].apply({'params': params}, *a)
  qkv = apply('qkv', p['attn']['qkv'], apply('ln', p['norm1'], x)).reshape(n, t, 3, h, d // h)
  y = x + apply('proj', p['attn']['proj'], ops['attn_core'][0](qkv[:, :, 0], qkv[:, :, 1],
                                                                qkv[:, :, 2]))
  hidden = ops['gelu'][0](apply('fc1', p['mlp']['fc1'], apply('ln', p['norm2'], y)))
  y = y + apply('fc2', p['mlp']['fc2'], hidden)
  np.testing.assert_allclose(y, block.apply({'params': p}, x), rtol=1e-5, atol=1e-5)
  assert ops['gelu'][0] is vit.gelu


def test_a_run_times_every_chosen_op(capsys):
  rows = bench.main(['--shape', '2,5,8,2', '--reps', '1', '--ops', 'ln,block',
                     '--frameworks', 'jax'])
  assert [shape for shape, _ in rows] == ['2,5,8,2']
  assert set(rows[0][1]) == {'jax_ln_fwd', 'jax_ln_fwdbwd', 'jax_block_fwd', 'jax_block_fwdbwd'}
  assert all(ms > 0 for ms in rows[0][1].values())
  out = capsys.readouterr().out
  assert '| 2,5,8,2 | block |' in out
  with pytest.raises(SystemExit):
    bench.main(['--ops', 'softmax'])
  with pytest.raises(SystemExit):
    bench.main(['--shape', '2,5,8'])
