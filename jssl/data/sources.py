"""Image sources, picked by one string; all random access by example index.

    'embedded'      the CIFAR-10 subset shipped in the package (`jssl.data.embedded`)
    'synthetic'     random uint8 images, deterministic from the index (benchmarks)
    'tfds:NAME'     a prepared TFDS image dataset (`data_dir`), read offline
    'folder:PATH'   an image folder: PATH/<split> if that folder exists, else PATH itself
    'records:DIR'   TFRecord shards written by `python -m jssl.data.prepare`

Every source is a `Source`: its size, class names, and a graph function `read(index)` giving the
encoded image and its label, so that tf.data can map over a dataset of indices; `decode` turns a
record into a uint8 [H, W, 3] RGB image; `describe(index)` names the example (its file) in
reports. Shuffling, restarts and splitting over processes are therefore index arithmetic.

TFDS: random access on the prepared shards, no `as_dataset`. For the tfrecord format the record
offsets of each shard are found once by scanning the record headers (a few seconds for ImageNet),
then records are read with `os.pread`; for array_record the array_record reader is used. Records
are parsed in the graph with the dataset's own features, the image left encoded.
"""

import dataclasses
import functools
import logging
import os
import struct
import threading
from typing import Callable

import numpy as np
import tensorflow as tf

from jssl.data import config as config_lib

_LOG = logging.getLogger(__name__)

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.gif', '.bmp')
_MAGICS = (b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n', b'GIF8', b'BM')
# Images above this many pixels are refused before decoding (PIL's decompression-bomb limit):
# a small file can declare a huge image, whose decoded RGB array would exhaust memory.
MAX_PIXELS = 89_478_485


def _be(record, start, n):
  """The big-endian unsigned integer of bytes [start, start + n) of a string tensor."""
  part = tf.strings.substr(record, tf.cast(start, tf.int32), tf.constant(n, tf.int32))
  b = tf.cast(tf.io.decode_raw(part, tf.uint8), tf.int64)
  return tf.reduce_sum(b * tf.constant([256 ** (n - 1 - k) for k in range(n)], tf.int64))


def _le(record, start, n):
  b = tf.cast(tf.io.decode_raw(tf.strings.substr(record, start, n), tf.uint8), tf.int64)
  return tf.reduce_sum(b * tf.constant([256 ** k for k in range(n)], tf.int64))


# JPEG start-of-frame markers (baseline, progressive, lossless...; not DHT C4, JPG C8, DAC CC)
_JPEG_SOF = tuple(m for m in range(0xC0, 0xD0) if m not in (0xC4, 0xC8, 0xCC))
_JPEG_MAX_SEGMENTS = 256


def jpeg_pixel_count(record: tf.Tensor) -> tf.Tensor:
  """Width x height of a JPEG's start-of-frame header, found by walking the marker segments from
  byte 2 (each `FF xx` + a 2-byte big-endian length); 0 when no frame header comes before the
  scan, the end of the file or `_JPEG_MAX_SEGMENTS` segments (truncated or not a JPEG).
  Unlike tf.io.extract_jpeg_shape it never fails, whatever the bytes."""
  size = tf.cast(tf.strings.length(record), tf.int64)
  sof = tf.constant(_JPEG_SOF, tf.int64)

  def cond(i, offset, pixels, done):
    return tf.logical_and(tf.logical_not(done),
                          tf.logical_and(i < _JPEG_MAX_SEGMENTS, offset + 9 <= size))

  def body(i, offset, pixels, done):
    marker = _be(record, offset + 1, 1)
    valid = tf.equal(_be(record, offset, 1), 0xFF)
    is_sof = tf.logical_and(valid, tf.reduce_any(tf.equal(marker, sof)))
    pixels = tf.where(is_sof, _be(record, offset + 5, 2) * _be(record, offset + 7, 2), pixels)
    ends = tf.logical_or(tf.equal(marker, 0xDA), tf.equal(marker, 0xD9))  # scan, end of image
    done = tf.logical_or(tf.logical_or(tf.logical_not(valid), is_sof), ends)
    step = tf.where(tf.equal(marker, 0xFF), tf.constant(1, tf.int64),  # a fill byte
                    2 + _be(record, offset + 2, 2))
    return i + 1, offset + step, pixels, done

  zero = tf.constant(0, tf.int64)
  return tf.while_loop(cond, body, (tf.constant(0), tf.constant(2, tf.int64), zero,
                                    tf.constant(False)))[2]


def pixel_count(record: tf.Tensor) -> tf.Tensor:
  """Width x height an encoded image declares in its header (JPEG, PNG, GIF, BMP), without
  decoding it; 0 when it cannot tell."""
  head = tf.strings.substr(record, 0, 8)
  size = tf.strings.length(record)
  return tf.case([
      (tf.equal(tf.strings.substr(head, 0, 3), b'\xff\xd8\xff'),
       lambda: jpeg_pixel_count(record)),
      (tf.logical_and(tf.equal(head, b'\x89PNG\r\n\x1a\n'), size >= 24),
       lambda: _be(record, 16, 4) * _be(record, 20, 4)),
      (tf.logical_and(tf.equal(tf.strings.substr(head, 0, 4), b'GIF8'), size >= 10),
       lambda: _le(record, 6, 2) * _le(record, 8, 2)),
      (tf.logical_and(tf.equal(tf.strings.substr(head, 0, 2), b'BM'), size >= 26),
       lambda: tf.abs(_le(record, 18, 4) * _le(record, 22, 4))),
  ], default=lambda: tf.constant(0, tf.int64))


def decode_rgb(record: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
  """Encoded JPEG/PNG/GIF/BMP -> uint8 [H, W, 3] (gray, RGBA and palette converted to RGB)."""
  del index
  image = tf.io.decode_image(record, channels=3, dtype=tf.uint8, expand_animations=False)
  image.set_shape([None, None, 3])
  return image


def looks_like_image(record: tf.Tensor) -> tf.Tensor:
  """Cheap graph check: non-empty and starts with a known image signature (no decoding)."""
  return tf.reduce_any([tf.equal(tf.strings.substr(record, 0, len(m)), m) for m in _MAGICS])


@dataclasses.dataclass(frozen=True)
class Source:
  """A random-access image source (see the module docstring)."""
  name: str
  split: str
  num_examples: int
  class_names: tuple[str, ...]
  read: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]  # index -> (record, int32 label)
  describe: Callable[[int], str]
  decode: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] = decode_rgb
  may_be_corrupt: bool = True  # False: skip the cheap checks (embedded, synthetic)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def labeled(self) -> bool:
    return bool(self.class_names)


def open_source(source: str, split: str, *, data_dir: str | None = None,
                synthetic=None) -> Source:
  """Opens the source named by `source` ('folder:/x', 'tfds:cifar10', ...) at `split`."""
  scheme = config_lib.scheme_of(source)
  arg = source[len(scheme) + 1:]
  if scheme == 'embedded':
    from jssl.data import embedded  # pylint: disable=g-import-not-at-top
    return embedded.embedded_source(split)
  if scheme == 'synthetic':
    synthetic = synthetic or {'image_size': 224, 'num_examples': 10000, 'num_classes': 10}
    return synthetic_source(split, **dict(synthetic))
  if scheme == 'folder':
    return folder_source(arg, split)
  if scheme == 'records':
    return records_source(arg, split)
  return tfds_source(arg, split, data_dir)


# ---------------------------------------------------------------------------------- synthetic

def synthetic_source(split: str, image_size: int, num_examples: int,
                     num_classes: int) -> Source:
  """Uniform random uint8 images of `image_size`^2, a function of (split, index); label i % C."""
  salt = int.from_bytes(split.encode()[:7].ljust(7, b'\0'), 'little')

  def read(index):
    return tf.constant(b''), tf.cast(index % num_classes, tf.int32)

  def decode(record, index):
    del record
    seed = tf.stack([tf.cast(index, tf.int64), tf.constant(salt, tf.int64)])
    pixels = tf.random.stateless_uniform([image_size, image_size, 3], seed, 0, 256, tf.int32)
    return tf.cast(pixels, tf.uint8)

  return Source(name='synthetic', split=split, num_examples=num_examples,
                class_names=tuple(str(c) for c in range(num_classes)), read=read,
                describe=lambda i: f'synthetic {split} example {i}', decode=decode,
                may_be_corrupt=False)


# ------------------------------------------------------------------------------------- folder

def _is_image_file(name: str) -> bool:
  return not name.startswith('.') and name.lower().endswith(IMAGE_EXTENSIONS)


def _images_under(root: str) -> list[str]:
  """Image files under `root` (recursive), relative to `root`, sorted."""
  found = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith('.'))
    rel = os.path.relpath(dirpath, root)
    for f in filenames:
      if not _is_image_file(f):
        continue
      if not os.path.exists(os.path.join(dirpath, f)):  # a broken or looping symbolic link
        _LOG.warning('skipping %s: a broken or looping symbolic link', os.path.join(dirpath, f))
        continue
      found.append(os.path.normpath(os.path.join(rel, f)))
  return sorted(found)


def list_folder(path: str, split: str) -> tuple[str, list[str], np.ndarray, tuple[str, ...]]:
  """Returns (root, relative image paths, int32 labels, class names) of an image folder.

  One sub-folder per class gives labels (sorted class names -> ids; every non-hidden
  sub-folder is a class); a folder without class sub-folders holding images is unlabeled
  (label -1). Only .jpg/.jpeg/.png files count (case-insensitive); others are ignored.
  """
  if not os.path.isdir(path):
    raise config_lib.DataNotFoundError(f'image folder not found: {path!r} (data source '
                                       f'folder:{path})')
  root = os.path.join(path, split) if os.path.isdir(os.path.join(path, split)) else path
  entries = sorted(os.listdir(root))
  subdirs = [d for d in entries if not d.startswith('.') and os.path.isdir(os.path.join(root, d))]
  per_class = [_images_under(os.path.join(root, d)) for d in subdirs]
  if any(per_class):
    files = [os.path.join(d, f) for d, fs in zip(subdirs, per_class) for f in fs]
    labels = np.concatenate([np.full(len(fs), c, np.int32) for c, fs in enumerate(per_class)])
    class_names = tuple(subdirs)
  else:
    files = sorted(f for f in entries if _is_image_file(f)
                   and os.path.isfile(os.path.join(root, f)))
    labels, class_names = np.full(len(files), -1, np.int32), ()
  if not files:
    raise config_lib.DataError(f'no images (.jpg, .jpeg, .png) found in folder {root!r} '
                     f'(data source folder:{path}, split {split!r})')
  return root, files, labels, class_names


def folder_source(path: str, split: str) -> Source:
  """Streams images from an ImageNet-style folder; only the file list is held in memory."""
  root, files, labels, class_names = list_folder(path, split)
  prefix = os.path.join(root, '')
  files_t = tf.constant(files)
  labels_t = tf.constant(labels)

  def read(index):
    return tf.io.read_file(prefix + tf.gather(files_t, index)), tf.gather(labels_t, index)

  return Source(name=f'folder:{path}', split=split, num_examples=len(files),
                class_names=class_names, read=read,
                describe=lambda i: os.path.join(root, files[int(i)]))


# ----------------------------------------------------------------- record files (random access)

class RecordFiles:
  """Random access to the records of sharded TFRecord or ArrayRecord files.

  `shards` is a list of (path, skip, take): global index i runs over the `take` records after
  the first `skip` of each shard in turn. TFRecord offsets come from one scan of the headers.
  """

  def __init__(self, shards: list[tuple[str, int, int]], file_format: str = 'tfrecord'):
    if file_format not in ('tfrecord', 'array_record'):
      raise ValueError(f'unsupported record file format {file_format!r} ({shards[0][0]}...)')
    self.paths = [p for p, _, _ in shards]
    self.file_format = file_format
    self.skips = np.array([s for _, s, _ in shards], np.int64)
    self.starts = np.concatenate([[0], np.cumsum([t for _, _, t in shards])]).astype(np.int64)
    self.num_records = int(self.starts[-1])
    self._lock = threading.Lock()
    self._handles = {}
    if file_format == 'tfrecord':
      self._offsets = [_tfrecord_offsets(p)[s:s + t] for p, s, t in shards]
      for (path, s, t), offs in zip(shards, self._offsets):
        if len(offs) != t:
          raise ValueError(f'{path}: expected at least {s + t} records, found {s + len(offs)}')

  def locate(self, index: int) -> tuple[int, int]:
    """Global index -> (shard number, record number within the shard)."""
    if not 0 <= index < self.num_records:
      raise IndexError(f'record index {index} out of range [0, {self.num_records})')
    shard = int(np.searchsorted(self.starts, index, side='right') - 1)
    return shard, int(index - self.starts[shard] + self.skips[shard])

  def _handle(self, shard: int):
    with self._lock:
      if shard not in self._handles:
        if self.file_format == 'tfrecord':
          self._handles[shard] = os.open(self.paths[shard], os.O_RDONLY)
        else:
          from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
          self._handles[shard] = array_record_module.ArrayRecordReader(
              self.paths[shard], 'readahead_buffer_size:0')
      return self._handles[shard]

  def __getitem__(self, index: int) -> bytes:
    shard, k = self.locate(int(index))
    handle = self._handle(shard)
    if self.file_format == 'array_record':
      with self._lock:  # thread safety of the reader is not documented
        return handle.read([k])[0]
    offset, length = self._offsets[shard][k - int(self.skips[shard])]
    data = os.pread(handle, int(length), int(offset))
    if len(data) != length:
      raise OSError(f'{self.paths[shard]}: short read of record {k}')
    return data

  def read_tf(self, index: tf.Tensor) -> tf.Tensor:
    """Graph op: the serialized record at `index` (a scalar tf.string)."""
    record = tf.numpy_function(lambda i: np.asarray(self[int(i)], dtype=object), [index],
                               tf.string, stateful=False)
    record.set_shape([])
    return record

  def __del__(self):
    if self.file_format == 'tfrecord':
      for handle in getattr(self, '_handles', {}).values():
        try:
          os.close(handle)
        except (OSError, TypeError, AttributeError):  # at interpreter exit `os` may be gone
          pass


def _tfrecord_offsets(path: str) -> np.ndarray:
  """[num_records, 2] (data offset, data length) of a TFRecord file, from its headers."""
  rows, size = [], os.path.getsize(path)
  with open(path, 'rb') as f:
    pos = 0
    while pos < size:
      f.seek(pos)
      header = f.read(8)
      if len(header) < 8:
        raise ValueError(f'truncated TFRecord file {path} at byte {pos}')
      (length,) = struct.unpack('<Q', header)
      if pos + 16 + length > size:
        raise ValueError(f'truncated TFRecord file {path}: record at byte {pos} runs past the end')
      rows.append((pos + 12, length))
      pos += 16 + length
  return np.array(rows, np.int64).reshape(-1, 2)


# ------------------------------------------------------------------------------------ records

RECORDS_FORMAT = 'jssl.records/1'


def records_index(directory: str, split: str) -> dict:
  """Reads DIR/<split>.json written by `jssl.data.prepare`."""
  import json  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, f'{split}.json')
  if not os.path.isdir(directory):
    raise config_lib.DataNotFoundError(f'records folder not found: {directory!r} '
                            f'(data source records:{directory})')
  if not os.path.isfile(path):
    raise config_lib.DataNotFoundError(f'records index not found: {path!r} (no split {split!r} in '
                            f'records:{directory}; run python -m jssl.data.prepare)')
  with open(path) as f:
    index = json.load(f)
  if index.get('format') != RECORDS_FORMAT:
    raise ValueError(f'{path}: format {index.get("format")!r} is not {RECORDS_FORMAT!r}')
  return index


def parse_record(serialized: tf.Tensor) -> dict:
  """Parses one prepared tf.train.Example: image (encoded bytes), label (int64), path."""
  return tf.io.parse_single_example(serialized, {
      'image': tf.io.FixedLenFeature([], tf.string),
      'label': tf.io.FixedLenFeature([], tf.int64),
      'path': tf.io.FixedLenFeature([], tf.string, default_value=''),
  })


def records_source(directory: str, split: str) -> Source:
  """Random access to TFRecord shards written by `jssl.data.prepare`."""
  index = records_index(directory, split)
  shards = [(os.path.join(directory, s['file']), 0, s['num_examples']) for s in index['shards']]
  files = RecordFiles(shards, 'tfrecord')
  if files.num_records != index['num_examples']:
    raise ValueError(f'{directory}/{split}.json: num_examples {index["num_examples"]} != '
                     f'{files.num_records} records in its shards')

  def read(i):
    ex = parse_record(files.read_tf(i))
    return ex['image'], tf.cast(ex['label'], tf.int32)

  def describe(i):
    shard, k = files.locate(int(i))
    original = tf.train.Example.FromString(files[int(i)]).features.feature['path']
    where = f'{files.paths[shard]} record {k}'
    if not original.bytes_list.value:
      return where
    return f'{where} ({original.bytes_list.value[0].decode()})'

  return Source(name=f'records:{directory}', split=split, num_examples=files.num_records,
                class_names=tuple(index['class_names']), read=read, describe=describe)


# --------------------------------------------------------------------------------------- tfds

def _pick_feature(features, kind, prefer: str):
  found = [k for k, f in features.items() if isinstance(f, kind)]
  return prefer if prefer in found else (found[0] if found else None)


@functools.lru_cache(maxsize=16)
def _tfds_builder(name: str, data_dir: str | None):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    raise config_lib.DataNotFoundError(
        f'TFDS dataset {name!r} cannot be loaded (data_dir={data_dir!r}): {first}') from e
  if not builder.is_prepared():
    raise config_lib.DataNotFoundError(
        f'TFDS dataset {name!r} is not prepared in {builder.data_dir!r} and jssl does not '
        f'download: prepare it where the download works (python -c "import tensorflow_datasets '
        f'as tfds; tfds.builder({name!r}).download_and_prepare()") and pass '
        f'--config.data.data_dir=DIR, or give an image folder: --config.data.source=folder:PATH')
  return builder


def tfds_source(name: str, split: str, data_dir: str | None) -> Source:
  """A prepared TFDS image dataset; image and label features found by type."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = _tfds_builder(name, data_dir)
  info = builder.info
  image_key = _pick_feature(info.features, tfds.features.Image, 'image')
  if image_key is None:
    raise ValueError(f'TFDS dataset {name!r} has no top-level Image feature: {list(info.features)}')
  label_key = _pick_feature(info.features, tfds.features.ClassLabel, 'label')
  try:
    instructions = info.splits[split].file_instructions
  except (KeyError, ValueError) as e:
    raise config_lib.DataError(f'TFDS dataset {name!r} has no split {split!r} '
                     f'(splits: {list(info.splits)}): {e}') from None
  file_format = getattr(info.file_format, 'value', info.file_format) or 'tfrecord'
  files = RecordFiles([(str(f.filename), f.skip, f.take) for f in instructions], file_format)
  decoders = {image_key: tfds.decode.SkipDecoding()}

  def read(i):
    ex = info.features.deserialize_example(files.read_tf(i), decoders=decoders)
    label = tf.cast(ex[label_key], tf.int32) if label_key else tf.constant(-1, tf.int32)
    return ex[image_key], label

  def describe(i):
    shard, k = files.locate(int(i))
    return f'tfds:{name} {split} example {i} ({files.paths[shard]} record {k})'

  class_names = tuple(info.features[label_key].names) if label_key else ()
  return Source(name=f'tfds:{name}', split=split, num_examples=files.num_records,
                class_names=class_names, read=read, describe=describe)
