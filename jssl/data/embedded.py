"""The embedded default dataset: a fixed, balanced subset of CIFAR-10, shipped in the package.

Provenance: CIFAR-10 (A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images",
2009), as 32x32 JPEGs. `embedded/cifar10_subset.npz` keeps, for each of the 10 classes, the
first 1,000 training and the first 200 test images (sorted file names of the class folder): 10,000
train / 2,000 test, built by `python -m jssl.data.make_embedded`.

Layout (a compressed .npz, loaded with allow_pickle=False): per split `<split>_bytes` (uint8,
the JPEG files concatenated), `<split>_offsets` (int64, N + 1 boundaries), `<split>_labels`
(int32); `class_names` (fixed-width unicode).
"""

import functools
import os

import numpy as np
import tensorflow as tf

from jssl.data import sources

PATH = os.path.join(os.path.dirname(__file__), 'embedded', 'cifar10_subset.npz')
SPLITS = ('train', 'test')


@functools.lru_cache(maxsize=None)
def load_split(split: str) -> tuple[tuple[bytes, ...], np.ndarray, tuple[str, ...]]:
  """Returns (JPEG bytes per image, int32 labels, class names) of one split."""
  if split not in SPLITS:
    raise ValueError(f'embedded dataset has no split {split!r}; splits: {SPLITS}')
  if not os.path.isfile(PATH):
    raise FileNotFoundError(f'embedded dataset file missing: {PATH} (reinstall jssl, or build it '
                            'with python -m jssl.data.make_embedded)')
  with np.load(PATH, allow_pickle=False) as data:
    raw, offsets = data[f'{split}_bytes'].tobytes(), data[f'{split}_offsets']
    labels, names = data[f'{split}_labels'], tuple(str(n) for n in data['class_names'])
  blobs = tuple(raw[a:b] for a, b in zip(offsets[:-1], offsets[1:]))
  return blobs, labels, names


def embedded_source(split: str) -> sources.Source:
  """The embedded CIFAR-10 subset as a `Source` (JPEG bytes held in memory)."""
  blobs, labels, names = load_split(split)
  blobs_t, labels_t = tf.constant(blobs), tf.constant(labels)

  def read(index):
    return tf.gather(blobs_t, index), tf.gather(labels_t, index)

  return sources.Source(name='embedded', split=split, num_examples=len(blobs),
                        class_names=names, read=read,
                        describe=lambda i: f'embedded CIFAR-10 subset {split} #{int(i)}',
                        may_be_corrupt=False)
