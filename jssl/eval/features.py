"""Frozen-feature extraction: run `features_fn` over batches and keep the valid rows.

A batch is a dict with images under `image_key` (`[B, H, W, 3]` float32), `label` (`[B]` ints)
and optionally `valid` (`[B]` bool; False marks padding of the last batch). Arrays may be numpy
or (global, sharded) `jax.Array`s; every result comes back to the host as numpy.
"""

from typing import Callable, Iterable, Iterator, Mapping, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils


def to_host(x) -> np.ndarray:
  """A numpy copy of `x`, gathering a global array that spans several processes."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(x)


class BoundFeatures:
  """`images -> jax.jit(fn)(*args, images)`: a features_fn whose parameters are jit arguments.

  Jitting a closure over parameters would bake them into the program as constants (slow to
  compile, a copy per program); `bind(method.features, params, batch_stats)` avoids that.
  """

  def __init__(self, fn: Callable, *args):
    self.jitted = jax.jit(fn)
    self.args = args

  def __call__(self, images):
    return self.jitted(*self.args, images)


def bind(fn: Callable, *args) -> BoundFeatures:
  """`images -> fn(*args, images)`, jitted with `args` (e.g. params, batch_stats) as arguments."""
  return BoundFeatures(fn, *args)


def _jitted(fn: Callable) -> Callable:
  """`fn` itself if already jitted (`jax.jit` or `bind`), else `jax.jit(fn)`."""
  return fn if isinstance(fn, BoundFeatures) or hasattr(fn, 'lower') else jax.jit(fn)


def spread_batches(batches: Iterable[Mapping], max_examples: int) -> Iterator[Mapping]:
  """Every s-th batch of a sized iterable, so that about `max_examples` rows span all of it.

  `s = max(1, (len(batches) * B) // max_examples)` with B the first batch's size: on data in
  class order (an image folder) the kept rows still cover every class. An iterable without
  `len()` is passed through unchanged (its first rows are then the ones kept).
  """
  if not hasattr(batches, '__len__'):
    yield from batches
    return
  num_batches = len(batches)
  stride = None
  for i, batch in enumerate(batches):
    if stride is None:
      rows = np.shape(batch['label'])[0]
      stride = max(1, (num_batches * rows) // max(int(max_examples), 1))
    if i % stride == 0:
      yield batch


def extract_many(features_fns: Mapping[str, Callable], batches: Iterable[Mapping], *,
                 image_key: str = 'view_0', max_examples: Optional[int] = None):
  """Features of every valid row under each of several `features_fns`, in one pass.

  Each `features_fns[name](images [B, H, W, 3]) -> [B, F]` is jitted here unless it already is
  (`jax.jit`, `bind`); a plain closure over parameters is jitted with them as constants, so
  prefer `bind(method.features, params, batch_stats)`. With `max_examples` (None or 0: all), at
  most that many valid rows are kept, from batches spread over the iterable when it has a
  `len()` (`spread_batches`), else from its first batches; iteration stops once they are found.

  Returns:
    `({name: float32 [N, F]}, int32 [N] labels)`.
  """
  fns = {name: _jitted(fn) for name, fn in features_fns.items()}
  feats = {name: [] for name in fns}
  labels = []
  count = 0
  if max_examples:
    batches = spread_batches(batches, max_examples)
  for batch in batches:
    images = batch[image_key]
    outs = {name: fn(images) for name, fn in fns.items()}
    label = to_host(batch['label']).astype(np.int32)
    valid = (np.ones(label.shape, bool) if batch.get('valid') is None
             else to_host(batch['valid']).astype(bool))
    if max_examples:
      keep = np.cumsum(valid) <= max_examples - count
      valid = valid & keep
    for name, out in outs.items():
      feats[name].append(to_host(out).astype(np.float32)[valid])
    labels.append(label[valid])
    count += int(valid.sum())
    if max_examples and count >= max_examples:
      break
  if not labels:
    raise ValueError('extract_features: the batch iterable yielded no batch')
  return {name: np.concatenate(f) for name, f in feats.items()}, np.concatenate(labels)


def extract_features(features_fn: Callable, batches: Iterable[Mapping], *,
                     image_key: str = 'view_0', max_examples: Optional[int] = None):
  """`(feats float32 [N, F], labels int32 [N])` of the valid rows; see `extract_many`."""
  feats, labels = extract_many({'f': features_fn}, batches, image_key=image_key,
                               max_examples=max_examples)
  return feats['f'], labels
