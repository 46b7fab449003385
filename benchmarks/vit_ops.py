"""Each op of one ViT block timed alone, forward and forward + backward, in jssl and in PyTorch.

The pieces of `jssl.models.vit.Block` (LayerNorm, the fused qkv projection, the attention core,
the output projection, the MLP's two products and its GELU) and the whole block, jitted one by
one on the same random arrays, beside the same ops in plain PyTorch (2 threads, when torch is
importable), so that a gap in the ViT step can be traced to the op that makes it:

    python benchmarks/vit_ops.py [--shape N,T,D,H ...] [--reps 5] [--ops ln,attn_core,block]
        [--frameworks jax,torch]

`--shape` is (batch x views, tokens, width, heads); the defaults are the `mae.py:cifar10`
step at batch 256: its encoder (12 blocks of 192 wide, 3 heads, on the 16 visible patches and
the CLS token) and its decoder (4 blocks of 256 wide, 8 heads, on all 65 tokens). Variants of
an op in jssl (the attention core as `jax.nn.dot_product_attention` or as two einsums in the
heads-major layout; the exact GELU through erf (jssl's) or erfc (flax's), or the tanh one) are
separate rows. Prints one line per shape
and a Markdown table (milliseconds, medians).
"""

import argparse
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jssl.models import vit

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # loaded by path (tests)
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conv_layers import median_ms  # pylint: disable=g-import-not-at-top,wrong-import-position

DEFAULT_SHAPES = ('256,17,192,3', '256,65,256,8')


def attention_einsum(q, k, v):
  """`[N, T, H, Dh]` q, k, v -> `[N, T, H * Dh]`: softmax(q k^T / sqrt(Dh)) v, heads-major."""
  n, t, h, dh = q.shape
  q, k, v = (jnp.transpose(a, (0, 2, 1, 3)) for a in (q, k, v))  # [N, H, T, Dh]
  logits = jnp.einsum('nhqd,nhkd->nhqk', q, k) / np.sqrt(dh)
  weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
  out = jnp.einsum('nhqk,nhkd->nhqd', weights, v)
  return jnp.reshape(jnp.transpose(out, (0, 2, 1, 3)), (n, t, h * dh))


def attention_xla(q, k, v):
  n, t, h, dh = q.shape
  return jnp.reshape(jax.nn.dot_product_attention(q, k, v), (n, t, h * dh))


def jax_ops(n, t, d, h):
  """{name: (module or function, input shapes)}: the pieces of jssl's block."""
  dh = d // h
  qkv_shape = (n, t, h, dh)
  return {
      'ln': (nn.LayerNorm(epsilon=1e-6), [(n, t, d)]),
      'qkv': (nn.Dense(3 * d), [(n, t, d)]),
      'attn_core': (attention_xla, [qkv_shape] * 3),
      'attn_core_einsum': (attention_einsum, [qkv_shape] * 3),
      'proj': (nn.Dense(d), [(n, t, d)]),
      'fc1': (nn.Dense(4 * d), [(n, t, d)]),
      'gelu': (vit.gelu, [(n, t, 4 * d)]),
      'gelu_flax': (lambda x: nn.gelu(x, approximate=False), [(n, t, 4 * d)]),
      'gelu_tanh': (lambda x: nn.gelu(x, approximate=True), [(n, t, 4 * d)]),
      'fc2': (nn.Dense(d), [(n, t, 4 * d)]),
      'block': (vit.Block(h), [(n, t, d)]),
  }


def jax_timings(n, t, d, h, reps, chosen=()):
  rng = np.random.default_rng(0)
  out = {}
  for name, (op, shapes) in jax_ops(n, t, d, h).items():
    if chosen and name not in chosen:
      continue
    xs = [jnp.asarray(rng.standard_normal(s, np.float32)) for s in shapes]
    if isinstance(op, nn.Module):
      params = op.init(jax.random.PRNGKey(0), *xs)
      apply = lambda p, *a, op=op: op.apply(p, *a)
    else:
      params = {}
      apply = lambda p, *a, op=op: op(*a)
    y = apply(params, *xs)
    g = jnp.asarray(rng.standard_normal(y.shape, np.float32))
    fwd = jax.jit(apply)
    # The forward pass and the gradients with respect to every input and every parameter, as a
    # train step needs (value_and_grad: for a linear op, grad alone would skip the forward).
    bwd = jax.jit(jax.value_and_grad(lambda p, *a, apply=apply, g=g: jnp.vdot(apply(p, *a), g),
                                     argnums=tuple(range(len(xs) + 1))))
    out[f'jax_{name}_fwd'] = median_ms(lambda: fwd(params, *xs), reps)
    out[f'jax_{name}_fwdbwd'] = median_ms(lambda: bwd(params, *xs), reps)
  return out


def torch_timings(torch, n, t, d, h, reps, chosen=()):
  F = torch.nn.functional
  dh = d // h

  def sdpa(q, k, v):  # [N, T, H, Dh] -> [N, T, D], as the PyTorch reference's attention
    q, k, v = (a.transpose(1, 2) for a in (q, k, v))
    return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d)

  class Block(torch.nn.Module):  # the reference's block (benchmarks/torch_reference_vit.py)

    def __init__(self):
      super().__init__()
      self.norm1, self.norm2 = torch.nn.LayerNorm(d, eps=1e-6), torch.nn.LayerNorm(d, eps=1e-6)
      self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
      self.fc1, self.fc2 = torch.nn.Linear(d, 4 * d), torch.nn.Linear(4 * d, d)

    def forward(self, x):
      q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, h, dh).unbind(2)
      x = x + self.proj(sdpa(q, k, v))
      return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))

  ops = {
      'ln': (torch.nn.LayerNorm(d, eps=1e-6), [(n, t, d)]),
      'qkv': (torch.nn.Linear(d, 3 * d), [(n, t, d)]),
      'attn_core': (sdpa, [(n, t, h, dh)] * 3),
      'proj': (torch.nn.Linear(d, d), [(n, t, d)]),
      'fc1': (torch.nn.Linear(d, 4 * d), [(n, t, d)]),
      'gelu': (F.gelu, [(n, t, 4 * d)]),
      'gelu_tanh': (lambda x: F.gelu(x, approximate='tanh'), [(n, t, 4 * d)]),
      'fc2': (torch.nn.Linear(4 * d, d), [(n, t, 4 * d)]),
      'block': (Block(), [(n, t, d)]),
  }
  rng = np.random.default_rng(0)
  out = {}
  for name, (op, shapes) in ops.items():
    if chosen and name not in chosen:
      continue
    xs = [torch.from_numpy(rng.standard_normal(s, np.float32)).requires_grad_() for s in shapes]
    with torch.no_grad():
      g = torch.from_numpy(rng.standard_normal(tuple(op(*xs).shape), np.float32))
      out[f'torch_{name}_fwd'] = median_ms(lambda op=op, xs=xs: op(*xs), reps)

    def fwdbwd(op=op, xs=xs, g=g):
      for a in xs + list(getattr(op, 'parameters', lambda: [])()):
        a.grad = None
      op(*xs).backward(g)
    out[f'torch_{name}_fwdbwd'] = median_ms(fwdbwd, reps)
  return out


def markdown_table(rows) -> str:
  """One row per (shape, op), columns jax / torch forward and forward + backward."""
  lines = ['| shape N,T,D,H | op | jssl fwd | jssl fwd+bwd | torch fwd | torch fwd+bwd |',
           '|---|---|---|---|---|---|']
  for shape, timings in rows:
    ops = dict.fromkeys(key.split('_', 1)[1].rsplit('_', 1)[0] for key in timings)
    for op in ops:
      cell = lambda key: f'{timings[key]:.1f}' if key in timings else ''
      lines.append(f'| {shape} | {op} | {cell(f"jax_{op}_fwd")} | {cell(f"jax_{op}_fwdbwd")} | '
                   f'{cell(f"torch_{op}_fwd")} | {cell(f"torch_{op}_fwdbwd")} |')
  return '\n'.join(lines)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shape', action='append', default=None,
                      help='N,T,D,H (repeatable); default: the mae.py:cifar10 encoder and decoder')
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--ops', default='', help='comma-separated op names (default: all)')
  parser.add_argument('--frameworks', default='jax,torch',
                      help="'jax', 'torch' or both (torch only when importable)")
  args = parser.parse_args(argv)
  chosen = tuple(o for o in args.ops.split(',') if o)
  known = set(jax_ops(2, 2, 4, 2))
  if set(chosen) - known:
    parser.error(f'unknown ops {sorted(set(chosen) - known)}; choose from {sorted(known)}')
  frameworks = set(args.frameworks.split(','))
  torch = None
  if 'torch' in frameworks:
    try:
      import torch  # pylint: disable=g-import-not-at-top
      torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores XLA:CPU uses
    except ImportError:
      pass
  rows = []
  for shape in args.shape or DEFAULT_SHAPES:
    try:
      n, t, d, h = (int(v) for v in shape.split(','))
    except ValueError:
      parser.error(f'--shape {shape!r}: expected four integers N,T,D,H')
    timings = jax_timings(n, t, d, h, args.reps, chosen) if 'jax' in frameworks else {}
    if torch is not None:
      timings.update(torch_timings(torch, n, t, d, h, args.reps, chosen))
    rows.append((shape, timings))
    print(f'{shape}: ' + ' '.join(f'{k}={v:.1f}' for k, v in timings.items()), flush=True)
  print(markdown_table(rows))
  return rows


if __name__ == '__main__':
  main()
