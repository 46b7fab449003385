"""The tf.data pipeline: deterministic, restartable, per-process iterators of numpy batches.

Everything is index arithmetic over a `Source` (random access by example index):
- Training: global step s is in epoch e = s // steps_per_epoch (steps_per_epoch =
  num_examples // global_batch_size, remainder dropped). Its global batch holds the epoch
  positions [(s % steps_per_epoch) * B, ... + B), mapped to example indices by a stateless
  permutation of seed (seed, e) (`tf.random.experimental.index_shuffle`, no table in memory).
  Process p reads only its contiguous part [p * B / P, (p + 1) * B / P) of that batch.
  The views of example i in epoch e use the stateless seed (seed, e, i). So element k of a
  process's stream is a pure function of (config, seed, k): starting at `start_step` gives
  exactly what an uninterrupted run gives from that step, and the processes' parts concatenate
  to the one-process global batch.
- Evaluation: every example once, in order, the last global batch padded; `valid` marks real
  examples, so all processes run the same number of steps.

Corrupt images (folder, records and TFDS sources): a record that is not an image (empty file,
unknown signature) is caught in the graph; one that fails to decode stops tf.data, and the
iterator then decodes that batch's examples eagerly to find the file, remembers it and rebuilds
the pipeline from the same step. With data.corrupt='skip' an unreadable training example is
replaced by the next readable one in index order (i + 1, i + 2, ... mod N; so shapes, step
counts and restarts stay exact), and in evaluation it gets valid=False; each such file is logged
once with its path and counted in `Batches.corrupt_files`. With 'fail' the iterator raises a
ValueError naming the file.
"""

import logging
import math
import re
from typing import Callable, Iterator

import numpy as np
import tensorflow as tf

from jssl.data import config as config_lib
from jssl.data import sources

_LOG = logging.getLogger(__name__)
MAX_SKIP = 64  # give up after this many consecutive unreadable training examples
_PERM_SALT, _VIEW_SALT = 0x5EED0001, 0x5EED0002
_EMPTY = np.zeros([0], np.int64)


# ------------------------------------------------------------------------------------ helpers

def open_source(data_cfg, source: str | None = None, split: str | None = None,
                train: bool = True) -> sources.Source:
  """The training (or, with train=False, eval) source of a data config, or `source`/`split`."""
  source = source or (data_cfg.source if train else data_cfg.eval_source)
  split = split or (data_cfg.train_split if train else data_cfg.eval_split)
  synthetic = data_cfg.synthetic.to_dict() if hasattr(data_cfg.synthetic, 'to_dict') else None
  return sources.open_source(source, split, data_dir=data_cfg.data_dir, synthetic=synthetic)


def dataset_info(source: str, split: str = 'train', data_dir: str | None = None,
                 synthetic: dict | None = None) -> dict:
  """{'num_examples', 'num_classes', 'class_names', 'labeled'} of `source` at `split`."""
  src = sources.open_source(source, split, data_dir=data_dir, synthetic=synthetic)
  return {'num_examples': src.num_examples, 'num_classes': src.num_classes,
          'class_names': src.class_names, 'labeled': src.labeled}


def train_recipe(data_cfg):
  """The training view recipe of a data config (`recipe`, `augment`, `on_device_photometric`)."""
  from jssl.data import augment  # pylint: disable=g-import-not-at-top
  params = _as_dict(data_cfg.augment)
  if data_cfg.on_device_photometric:
    params['on_device'] = True
  return augment.make_recipe(data_cfg.recipe, **params)


def eval_recipe(data_cfg):
  """The eval recipe; its `image_size` defaults to `data.image_size`."""
  from jssl.data import augment  # pylint: disable=g-import-not-at-top
  params = _as_dict(data_cfg.get('eval_augment', {}))
  if 'image_size' in augment.recipe_defaults(data_cfg.eval_recipe):
    params.setdefault('image_size', data_cfg.image_size)
  return augment.make_recipe(data_cfg.eval_recipe, **params)


def _as_dict(block) -> dict:
  return dict(block.to_dict() if hasattr(block, 'to_dict') else block)


def local_batch_size(global_batch_size: int, process_count: int,
                     num_devices: int | None = None) -> int:
  """global_batch_size / process_count, with errors naming the batch size and the count."""
  if not isinstance(global_batch_size, (int, np.integer)) or global_batch_size < 1:
    raise ValueError(f'batch_size must be a positive integer, got {global_batch_size!r}')
  if global_batch_size % process_count:
    raise ValueError(f'batch_size {global_batch_size} does not divide by the number of '
                     f'processes ({process_count})')
  if num_devices and global_batch_size % num_devices:
    raise ValueError(f'batch_size {global_batch_size} does not divide by the number of '
                     f'devices ({num_devices})')
  return global_batch_size // process_count


def example_seed(seed: int, epoch: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """The stateless int64 [2] seed of example `index` in `epoch`."""
  s = tf.random.experimental.stateless_fold_in(
      tf.constant([seed, _VIEW_SALT], tf.int64), tf.cast(epoch, tf.int64), alg='philox')
  s = tf.random.experimental.stateless_fold_in(s, tf.cast(index, tf.int64), alg='philox')
  return tf.cast(s, tf.int64)


def epoch_index(seed: int, epoch: tf.Tensor, position: tf.Tensor, num_examples: int) -> tf.Tensor:
  """Example index at `position` of the shuffled epoch `epoch` (a stateless permutation)."""
  s = tf.random.experimental.stateless_fold_in(
      tf.constant([seed, _PERM_SALT], tf.int64), tf.cast(epoch, tf.int64), alg='philox')
  return tf.random.experimental.index_shuffle(
      tf.cast(position, tf.int64), tf.cast(s, tf.int64), tf.constant(num_examples - 1, tf.int64))


def resize_center_crop(image: tf.Tensor, size: int) -> tf.Tensor:
  """uint8 image -> uint8 [size, size, 3]: shorter side resized to `size`, centre crop."""
  shape = tf.shape(image)
  h, w = shape[0], shape[1]

  def resize():
    scale = size / tf.cast(tf.minimum(h, w), tf.float32)
    nh = tf.maximum(size, tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32))
    nw = tf.maximum(size, tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32))
    x = tf.image.resize(image, [nh, nw], method='bilinear', antialias=True)
    x = tf.image.crop_to_bounding_box(x, (nh - size) // 2, (nw - size) // 2, size, size)
    return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)

  same = tf.logical_and(tf.equal(h, size), tf.equal(w, size))
  out = tf.cond(same, lambda: image, resize)
  return tf.ensure_shape(out, [size, size, 3])


# ------------------------------------------------------------------------- reading one example

def _is_bad(source: sources.Source, index: tf.Tensor, record: tf.Tensor,
            known_bad: np.ndarray) -> tf.Tensor:
  bad = tf.constant(False)
  if source.may_be_corrupt:
    bad = tf.logical_not(sources.looks_like_image(record))
    bad = tf.logical_or(bad, tf.cond(bad, lambda: tf.constant(False),
                                     lambda: sources.pixel_count(record) > sources.MAX_PIXELS))
  if known_bad.size:
    bad = tf.logical_or(bad, tf.reduce_any(tf.equal(index, tf.constant(known_bad))))
  return bad


def _cheap_check_reason(source: sources.Source, index: int) -> str:
  """Why `_is_bad`'s graph check refused example `index` (eagerly, for the report)."""
  try:
    record, _ = source.read(tf.constant(index, tf.int64))
    if bool(sources.looks_like_image(record)):
      pixels = int(sources.pixel_count(record))
      if pixels > sources.MAX_PIXELS:
        return (f'{pixels} pixels, above the limit of {sources.MAX_PIXELS} (refused before '
                'decoding)')
  except (tf.errors.OpError, OSError, ValueError) as e:
    return _first_line(e)
  return 'not an image file (empty or unknown signature)'


def _placeholder_image() -> tf.Tensor:
  return tf.zeros([16, 16, 3], tf.uint8)


def _read_train(source: sources.Source, i: tf.Tensor, known_bad: np.ndarray):
  """(image, label, used index, skipped): example i, or the next readable one after it.

  skipped is the number of unreadable examples passed over (i, i + 1, ...), -1 if MAX_SKIP
  were passed over without finding a readable one.
  """
  n = source.num_examples
  record, label = source.read(i)
  if not source.may_be_corrupt and not known_bad.size:
    return source.decode(record, i), label, i, tf.constant(0, tf.int32)

  def cond(t, j, record, label):
    del label
    return tf.logical_and(t < MAX_SKIP, _is_bad(source, j, record, known_bad))

  def body(t, j, record, label):
    del j, record, label
    j = (i + tf.cast(t, tf.int64) + 1) % n
    return (t + 1, j) + tuple(source.read(j))

  t, j, record, label = tf.while_loop(cond, body, (tf.constant(0, tf.int32), i, record, label))
  ok = tf.logical_not(_is_bad(source, j, record, known_bad))
  image = tf.cond(ok, lambda: source.decode(record, j), _placeholder_image)
  return image, label, j, tf.where(ok, t, -1)


def _read_eval(source: sources.Source, i: tf.Tensor, known_bad: np.ndarray):
  """(image, label, ok): example i; a placeholder image and ok=False if it is unreadable."""
  record, label = source.read(i)
  if not source.may_be_corrupt and not known_bad.size:
    return source.decode(record, i), label, tf.constant(True)
  ok = tf.logical_not(_is_bad(source, i, record, known_bad))
  return tf.cond(ok, lambda: source.decode(record, i), _placeholder_image), label, ok


def _unreadable(source: sources.Source, i: int, known_bad: set,
                substitute: bool) -> tuple[int, str] | None:
  """Eagerly finds the example that fails to read or decode for slot i, and why (or None)."""
  for t in range(MAX_SKIP if substitute else 1):
    j = (i + t) % source.num_examples
    if j in known_bad:
      continue
    try:
      record, _ = source.read(tf.constant(j, tf.int64))
      if source.may_be_corrupt and not bool(sources.looks_like_image(record)):
        continue
      if source.may_be_corrupt and int(sources.pixel_count(record)) > sources.MAX_PIXELS:
        continue
      source.decode(record, tf.constant(j, tf.int64))
      return None
    except (tf.errors.OpError, OSError, ValueError) as e:
      return j, _first_line(e)
  return None


def _first_line(error: Exception) -> str:
  """The gist of a TF error: its first line without the {{function_node ...}} prefix."""
  lines = [l for l in str(error).splitlines() if l.strip()]
  line = re.sub(r'\{\{[^}]*\}\}\s*', '', lines[0]) if lines else type(error).__name__
  return re.sub(r'\s*\[Op:.*$', '', line)


# ------------------------------------------------------------------------------------ iterator

class Batches(Iterator[dict]):
  """An iterator of numpy batch dicts that recovers from, reports and counts corrupt images.

  Attributes: `step` (the global step of the next batch), `num_steps` (None: endless),
  `steps_per_epoch` (training), `source`, `corrupt_files` ({description/path: times met}).
  """

  def __init__(self, build: Callable, slots: Callable, source: sources.Source, corrupt: str,
               start_step: int, num_steps: int | None, train: bool):
    self._build, self._slots, self.source = build, slots, source
    self._corrupt, self._train = corrupt, train
    self.step, self.num_steps = start_step, num_steps
    self.steps_per_epoch = None
    self.corrupt_files = {}
    self._known_bad, self._why = set(), {}
    self._it = None

  def __iter__(self):
    return self

  def __len__(self):
    if self.num_steps is None:
      raise TypeError('an endless training iterator has no length')
    return self.num_steps

  def __next__(self) -> dict:
    if self.num_steps is not None and self.step >= self.num_steps:
      raise StopIteration
    while True:
      if self._it is None:
        known = np.array(sorted(self._known_bad), np.int64)
        self._it = self._build(self.step, known if known.size else _EMPTY).as_numpy_iterator()
      try:
        batch = next(self._it)
        break
      except tf.errors.OutOfRangeError:
        raise StopIteration from None
      except tf.errors.OpError as e:
        self._it = None
        self._recover(e)
    self._account(batch)
    self.step += 1
    return {k: v for k, v in batch.items() if not k.startswith('_')}

  def _recover(self, error: Exception) -> None:
    found = set()
    for i in self._slots(self.step):
      bad = _unreadable(self.source, int(i), self._known_bad | found, self._train)
      if bad is not None:
        j, self._why[bad[0]] = bad
        found.add(j)
        if self._corrupt == 'fail':
          self._report(j)
    if not found:
      raise RuntimeError(f'data pipeline failed at step {self.step} ({self.source.name}, '
                         f'split {self.source.split}) and no unreadable image explains it: '
                         f'{error}') from error
    self._known_bad |= found

  def _account(self, batch: dict) -> None:
    n = self.source.num_examples
    if self._train:
      for row in np.flatnonzero(batch['_skipped']):
        i, t = int(batch['_slot'][row]), int(batch['_skipped'][row])
        if t < 0:
          raise config_lib.DataError(f'{MAX_SKIP} consecutive unreadable images, the first '
                                     f'{self.source.describe(i)}')
        for u in range(t):
          self._report((i + u) % n)
    else:
      for row in np.flatnonzero(batch['_bad']):
        self._report(int(batch['index'][row]))

  def _report(self, index: int) -> None:
    where = self.source.describe(index)
    why = self._why.get(index) or _cheap_check_reason(self.source, index)
    if self._corrupt == 'fail':
      raise config_lib.DataError(f'unreadable image {where}: {why} (data.corrupt="fail"; '
                                 '"skip" would skip and count it)')
    if where not in self.corrupt_files:
      _LOG.warning('skipping unreadable image %s: %s', where, why)
    self.corrupt_files[where] = self.corrupt_files.get(where, 0) + 1


def _finish(ds: tf.data.Dataset, data_cfg, local_batch: int) -> tf.data.Dataset:
  ds = ds.batch(local_batch, drop_remainder=True)
  if data_cfg.prefetch:
    ds = ds.prefetch(data_cfg.prefetch)
  options = tf.data.Options()
  options.deterministic = True
  return ds.with_options(options)


def _parallel(data_cfg) -> int:
  return tf.data.AUTOTUNE if data_cfg.num_parallel_calls == -1 else data_cfg.num_parallel_calls


def _no_autograph(fn):
  """Traces `fn` as written (plain graph ops): autograph would only slow tracing down."""
  return tf.autograph.experimental.do_not_convert(fn)


def _ensure_shapes(views: dict, shapes: dict) -> dict:
  return {k: tf.ensure_shape(v, shapes[k]) if k in shapes else v for k, v in views.items()}


# ------------------------------------------------------------------------------ the iterators

def train_iterator(data_cfg, global_batch_size: int, seed: int, start_step: int = 0,
                   process_index: int = 0, process_count: int = 1, *, recipe=None,
                   num_devices: int | None = None) -> Batches:
  """Endless per-process training batches {view_0, ..., (mask), label, index} from start_step.

  `recipe` overrides the config's (any callable (image, seed) -> views with `view_shapes`);
  `num_devices`, if given, must divide the global batch too.
  """
  config_lib.validate_data_config(data_cfg)
  b = local_batch_size(global_batch_size, process_count, num_devices)
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  source = open_source(data_cfg, train=True)
  n, big_b = source.num_examples, global_batch_size
  spe = n // big_b
  if spe < 1:
    raise config_lib.DataError(f'batch_size {big_b} is larger than the {n} examples of '
                               f'{source.name} (split {source.split})')
  recipe = recipe or train_recipe(data_cfg)
  seed = int(seed) % 2**63
  offset = process_index * b

  def slot(k):
    step, j = k // b, k % b
    epoch = step // spe
    return epoch, epoch_index(seed, epoch, (step % spe) * big_b + offset + j, n)

  def build(step0: int, known_bad: np.ndarray) -> tf.data.Dataset:
    @_no_autograph
    def element(k):
      epoch, i = slot(k)
      image, label, used, skipped = _read_train(source, i, known_bad)
      views = _ensure_shapes(recipe(image, example_seed(seed, epoch, i)), recipe.view_shapes)
      return dict(views, label=tf.cast(label, tf.int32), index=tf.cast(used, tf.int32),
                  _slot=i, _skipped=skipped)
    ds = tf.data.Dataset.range(step0 * b, 2**62)
    ds = ds.map(element, num_parallel_calls=_parallel(data_cfg), deterministic=True)
    return _finish(ds, data_cfg, b)

  def slots(step: int) -> np.ndarray:
    positions = (step % spe) * big_b + offset + np.arange(b)
    return epoch_index(seed, step // spe, positions, n).numpy()

  it = Batches(build, slots, source, data_cfg.corrupt, start_step, None, train=True)
  it.steps_per_epoch = spe
  return it


def eval_iterator(data_cfg, global_batch_size: int, *, split: str | None = None,
                  source: str | None = None, process_index: int = 0, process_count: int = 1,
                  raw: bool = False, recipe=None, max_examples: int = 0) -> Batches:
  """Every example of (source, split) once, in order, as per-process batches.

  With `max_examples` (0: all) only that many examples, spread evenly over the split (example
  `floor(j * n / max_examples)` for j < max_examples), so that a capped kNN bank of a
  class-sorted folder still holds every class.

  Yields {view_0 (the eval recipe's views), label, index, valid}; with raw=True {image (uint8,
  resized to data.image_size, centre-cropped), label, index, valid} for raw-pixel kNN. Defaults:
  data.eval_source / data.eval_split. The last global batch is padded (valid=False).
  """
  config_lib.validate_data_config(data_cfg)
  b = local_batch_size(global_batch_size, process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  src = open_source(data_cfg, source, split, train=False)
  total, size = src.num_examples, data_cfg.image_size
  n = min(total, max_examples) if max_examples and max_examples > 0 else total
  num_steps = math.ceil(n / global_batch_size)
  if not raw:
    recipe = recipe or eval_recipe(data_cfg)
  offset = process_index * b

  def position(k):
    return (k // b) * global_batch_size + offset + k % b

  def build(step0: int, known_bad: np.ndarray) -> tf.data.Dataset:
    @_no_autograph
    def element(k):
      pos = position(k)
      i = tf.minimum(pos, n - 1)
      if n < total:  # the evenly spread subset
        i = i * total // n
      image, label, ok = _read_eval(src, i, known_bad)
      if raw:
        out = {'image': resize_center_crop(image, size)}
      else:
        out = _ensure_shapes(recipe(image, example_seed(0, 0, i)), recipe.view_shapes)
      in_range = pos < n
      return dict(out, label=tf.cast(label, tf.int32), index=tf.cast(i, tf.int32),
                  valid=tf.logical_and(in_range, ok),
                  _bad=tf.logical_and(in_range, tf.logical_not(ok)))
    ds = tf.data.Dataset.range(step0 * b, num_steps * b)
    ds = ds.map(element, num_parallel_calls=_parallel(data_cfg), deterministic=True)
    return _finish(ds, data_cfg, b)

  def slots(step: int) -> np.ndarray:
    pos = position(np.arange(step * b, (step + 1) * b))
    pos = pos[pos < n]
    return pos * total // n if n < total else pos

  return Batches(build, slots, src, data_cfg.corrupt, 0, num_steps, train=False)
