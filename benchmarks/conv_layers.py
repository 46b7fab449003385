"""Each ResNet-18 (CIFAR stem) convolution timed alone: forward, input gradient, kernel gradient.

jssl's path (XLA's forward and input gradient, `jssl.models.conv.weight_gradient` for the
kernel), two matmul formulations of the same convolution (im2col: one product over the
concatenated 3x3 window; per tap: nine products accumulated), Winograd F(2x2, 3x3) passes for
the 3x3 stride-1 layers (benchmarks/winograd.py), and, when torch is importable, PyTorch's
oneDNN kernels in both layouts, all in one process on the same random arrays:

    python benchmarks/conv_layers.py [--batch 256] [--layers l1,l2] [--reps 3]
        [--passes jssl,winograd,torch_channels_last]

Prints one line per layer (milliseconds, medians), the totals weighted by how often the layer
occurs in ResNet-18, and the same as a Markdown table, so a gap can be traced to the layer and
the pass that make it. `im2col_product_only` times the im2col matmul on its already built input:
the product's share of the im2col forward pass.
"""

import argparse
import os
import statistics
import sys
import time

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np

from jssl.models import conv as jssl_conv

if os.path.dirname(os.path.abspath(__file__)) not in sys.path:  # loaded by path (tests)
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import winograd  # pylint: disable=g-import-not-at-top,wrong-import-position

NHWC = ('NHWC', 'HWIO', 'NHWC')
# name, input height = width, in channels, out channels, kernel, stride, count in ResNet-18.
LAYERS = (('stem', 32, 3, 64, 3, 1, 1), ('l1', 32, 64, 64, 3, 1, 4),
          ('l2a', 32, 64, 128, 3, 2, 1), ('l2sc', 32, 64, 128, 1, 2, 1),
          ('l2', 16, 128, 128, 3, 1, 3), ('l3a', 16, 128, 256, 3, 2, 1),
          ('l3sc', 16, 128, 256, 1, 2, 1), ('l3', 8, 256, 256, 3, 1, 3),
          ('l4a', 8, 256, 512, 3, 2, 1), ('l4sc', 8, 256, 512, 1, 2, 1),
          ('l4', 4, 512, 512, 3, 1, 3))


def window_slices(x, k: int, stride: int, pads):
  """The k x k strided slices of the padded NHWC input, one per kernel tap, and the output size."""
  xp = jnp.pad(x, ((0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)))
  n, hp, wp, c = xp.shape
  ho, wo = (hp - k) // stride + 1, (wp - k) // stride + 1
  slices = [lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * stride + 1,
                                         j + (wo - 1) * stride + 1, c), (1, stride, stride, 1))
            for i in range(k) for j in range(k)]
  return slices, ho, wo


def im2col(x, k: int, stride: int, pads):
  """The (rows, k * k * c_in) matrix of every output position's window, and the output size."""
  slices, ho, wo = window_slices(x, k, stride, pads)
  return jnp.concatenate(slices, axis=-1).reshape(-1, k * k * x.shape[-1]), ho, wo


def forward_im2col(x, w, stride, pads):
  patches, ho, wo = im2col(x, w.shape[0], stride, pads)
  return im2col_product(patches, w).reshape(x.shape[0], ho, wo, -1)


def forward_per_tap(x, w, stride, pads):
  slices, _, _ = window_slices(x, w.shape[0], stride, pads)
  taps = w.reshape(-1, *w.shape[2:])
  return sum(jnp.einsum('nhwc,co->nhwo', xs, taps[t]) for t, xs in enumerate(slices))


def im2col_product(patches, w):
  """The matmul of `forward_im2col` alone, on its already built (rows, k * k * c_in) input."""
  return patches @ w.reshape(-1, w.shape[-1])


def kernel_grad_im2col(x, g, k, stride, pads):
  patches, _, _ = im2col(x, k, stride, pads)
  return (patches.T @ g.reshape(-1, g.shape[-1])).reshape(k, k, x.shape[-1], -1)


def median_ms(fn, reps: int) -> float:
  """Median wall milliseconds of `fn()` (its result waited for) over `reps` calls after one."""
  jax.block_until_ready(fn())
  times = []
  for _ in range(reps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times) * 1e3


def jax_timings(x, w, g, k, stride, pads, reps, passes=()):
  conv = lambda x, w: lax.conv_general_dilated(x, w, (stride, stride), pads,
                                               dimension_numbers=NHWC)
  fns = {
      'jssl_forward': (conv, (x, w)),
      'jssl_input_grad': (lambda x, w, g: jax.vjp(lambda x: conv(x, w), x)[1](g)[0], (x, w, g)),
      'jssl_kernel_grad': (lambda x, g: jssl_conv.weight_gradient(
          x, g, (k, k), (stride, stride), pads), (x, g)),
  }
  if k > 1:
    fns.update({
        'im2col_forward': (lambda x, w: forward_im2col(x, w, stride, pads), (x, w)),
        'im2col_product_only': (im2col_product, (im2col(x, k, stride, pads)[0], w)),
        'per_tap_forward': (lambda x, w: forward_per_tap(x, w, stride, pads), (x, w)),
        'im2col_kernel_grad': (lambda x, g: kernel_grad_im2col(x, g, k, stride, pads), (x, g)),
    })
  if winograd.applies((k, k), (stride, stride), pads):
    wino = lambda x, w: winograd.conv3x3(x, w, pads)
    fns.update({
        'winograd_forward': (wino, (x, w)),
        'winograd_input_grad': (lambda x, w, g: jax.vjp(lambda x: wino(x, w), x)[1](g)[0],
                                (x, w, g)),
        'winograd_kernel_grad': (lambda x, g: winograd.weight_gradient(x, g, pads), (x, g)),
    })
  out = {}
  for name, (fn, args) in fns.items():
    if passes and not name.startswith(passes):
      continue
    jitted = jax.jit(fn)
    out[name] = median_ms(lambda: jitted(*args), reps)
  return out


def torch_timings(torch, x, w, g, k, stride, reps, passes=()):
  out = {}
  for layout, fmt in (('nchw', torch.contiguous_format), ('channels_last', torch.channels_last)):
    if passes and not f'torch_{layout}'.startswith(passes):
      continue
    as_torch = lambda a, perm: torch.from_numpy(np.array(a)).permute(*perm).contiguous(
        memory_format=fmt)
    tx, tg = as_torch(x, (0, 3, 1, 2)), as_torch(g, (0, 3, 1, 2))
    tw = as_torch(w, (3, 2, 0, 1))
    pad = k // 2
    backward = lambda mask: torch.ops.aten.convolution_backward(
        tg, tx, tw, None, [stride, stride], [pad, pad], [1, 1], False, [0, 0], 1, mask)
    with torch.no_grad():
      out[f'torch_{layout}_forward'] = median_ms(
          lambda: torch.nn.functional.conv2d(tx, tw, stride=stride, padding=pad), reps)
      out[f'torch_{layout}_input_grad'] = median_ms(lambda: backward([True, False, False]), reps)
      out[f'torch_{layout}_kernel_grad'] = median_ms(lambda: backward([False, True, False]),
                                                     reps)
  return out


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--batch', type=int, default=256)
  parser.add_argument('--layers', default='all', help="comma-separated names, or 'all'")
  parser.add_argument('--reps', type=int, default=3)
  parser.add_argument('--passes', default='',
                      help='comma-separated prefixes of the columns to time (default: all), '
                           'e.g. jssl,winograd,torch_channels_last')
  args = parser.parse_args(argv)
  passes = tuple(p for p in args.passes.split(',') if p)
  names = [name for name, *_ in LAYERS]
  chosen = names if args.layers == 'all' else args.layers.split(',')
  unknown = sorted(set(chosen) - set(names))
  if unknown:
    parser.error(f'unknown layers {unknown}; choose from {names}')
  try:
    import torch  # pylint: disable=g-import-not-at-top
    torch.set_num_threads(len(os.sched_getaffinity(0)))  # the cores XLA:CPU uses
  except ImportError:
    torch = None
  rng = np.random.default_rng(0)
  totals, rows = {}, []
  for name, size, c_in, c_out, k, stride, count in LAYERS:
    if name not in chosen:
      continue
    x = jnp.asarray(rng.standard_normal((args.batch, size, size, c_in), np.float32))
    w = jnp.asarray(rng.standard_normal((k, k, c_in, c_out), np.float32) / np.sqrt(k * k * c_in))
    pads = jssl_conv._pads(x.shape, w.shape, (stride, stride), 'SAME')  # pylint: disable=protected-access
    out_size = -(-size // stride)
    g = jnp.asarray(rng.standard_normal((args.batch, out_size, out_size, c_out), np.float32))
    timings = jax_timings(x, w, g, k, stride, pads, args.reps, passes)
    if torch is not None:
      timings.update(torch_timings(torch, x, w, g, k, stride, args.reps, passes))
    rows.append((name, count, timings))
    print(f'{name} (x{count}): ' + ' '.join(f'{key}={ms:.0f}' for key, ms in timings.items()),
          flush=True)
    for key, ms in timings.items():
      totals[key] = totals.get(key, 0.0) + ms * count
  print('total, weighted by count (ms): ' +
        ' '.join(f'{key}={ms:.0f}' for key, ms in totals.items()))
  print(markdown_table(rows, totals))
  return rows, totals


def markdown_table(rows, totals) -> str:
  """One row a layer (milliseconds), then the count-weighted totals of the passes all layers have."""
  keys = list(dict.fromkeys(key for _, _, timings in rows for key in timings))
  lines = ['| layer (count) | ' + ' | '.join(key.replace('_', ' ') for key in keys) + ' |',
           '|---' * (len(keys) + 1) + '|']
  for name, count, timings in rows:
    cells = [f'{timings[key]:.0f}' if key in timings else '' for key in keys]
    lines.append(f'| {name} ({count}) | ' + ' | '.join(cells) + ' |')
  every_layer = [key for key in keys if all(key in timings for _, _, timings in rows)]
  lines.append('| total | ' + ' | '.join(
      f'{totals[key]:.0f}' if key in every_layer else '' for key in keys) + ' |')
  return '\n'.join(lines)


if __name__ == '__main__':
  main()
