"""Host loading of labelled examples for fine-tuning: every label of a split, and chosen
examples decoded and resized (tf.data; jssl.train.finetune calls it only through here)."""

import numpy as np

from jssl.data import config as data_config
from jssl.data import pipeline


def split_labels(source: str, split: str, data_cfg) -> np.ndarray:
  """int32 labels of every example of (source, split); cheap for folders and the embedded set."""
  scheme = data_config.scheme_of(source)
  if scheme == 'folder':
    from jssl.data import sources  # pylint: disable=g-import-not-at-top
    return sources.list_folder(source[len('folder:'):], split)[2]
  if scheme == 'embedded':
    from jssl.data import embedded  # pylint: disable=g-import-not-at-top
    return np.asarray(embedded.load_split(split)[1], np.int32)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  src = pipeline.open_source(data_cfg, source, split)
  ds = tf.data.Dataset.range(src.num_examples).map(lambda i: src.read(i)[1],
                                                   num_parallel_calls=tf.data.AUTOTUNE)
  return np.concatenate([b.numpy() for b in ds.batch(4096)]).astype(np.int32)


def load_images(data_cfg, source: str, split: str, indices: np.ndarray, size: int):
  """`(uint8 [n, size, size, 3], int32 [n])` of the examples `indices`, decoded on the host."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  src = pipeline.open_source(data_cfg, source, split)

  def element(i):
    record, label = src.read(i)
    return pipeline.resize_center_crop(src.decode(record, i), size), label
  ds = tf.data.Dataset.from_tensor_slices(np.asarray(indices, np.int64))
  ds = ds.map(element, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(512)
  images, labels = [], []
  for x, y in ds:
    images.append(x.numpy())
    labels.append(y.numpy())
  return np.concatenate(images), np.concatenate(labels).astype(np.int32)
