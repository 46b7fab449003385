"""Converts an image folder once into sharded TFRecord files, read back as 'records:DIR'.

    python -m jssl.data.prepare --source folder:PATH --out DIR [--splits train,test]
        [--shards N] [--verify]

For each split, DIR/<split>-SSSSS-of-NNNNN.tfrecord hold tf.train.Examples {image: the original
encoded bytes, label: int64 (-1 unlabeled), path: the file's path relative to the folder}, in
the folder's (sorted) example order, cut into N contiguous shards; DIR/<split>.json indexes
them. Files that are not images (bad signature; with --verify, also those TF cannot decode) are
left out, logged with their path and listed under "skipped" in the index.
"""

import json
import logging
import os
import sys

from jssl.data import config as config_lib
from jssl.data import sources

_MAGICS = sources._MAGICS  # pylint: disable=protected-access


def _readable(data: bytes, verify: bool) -> str | None:
  """None if `data` looks like a usable image, else why not."""
  if not data.startswith(_MAGICS):
    return 'not an image file (unknown signature)'
  if verify:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    try:
      tf.io.decode_image(data, channels=3, expand_animations=False)
    except tf.errors.OpError as e:
      return str(e).splitlines()[0]
  return None


def _example(data: bytes, label: int, path: str) -> bytes:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  feature = {
      'image': tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
      'label': tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
      'path': tf.train.Feature(bytes_list=tf.train.BytesList(value=[path.encode()])),
  }
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def prepare(source: str, out_dir: str, split: str = 'train', shards: int = 1,
            verify: bool = False) -> dict:
  """Writes the shards and the JSON index of `split` of a folder source; returns the index."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if config_lib.scheme_of(source) != 'folder':
    raise ValueError(f'prepare converts folder sources (folder:PATH), got {source!r}')
  if shards < 1:
    raise ValueError(f'--shards must be >= 1, got {shards}')
  root, files, labels, class_names = sources.list_folder(source[len('folder:'):], split)
  kept = []
  skipped = []
  for rel, label in zip(files, labels):
    with open(os.path.join(root, rel), 'rb') as f:
      data = f.read()
    why = _readable(data, verify)
    if why:
      logging.warning('skipping %s: %s', os.path.join(root, rel), why)
      skipped.append(rel)
    else:
      kept.append((rel, int(label), data))
  if not kept:
    raise ValueError(f'no readable images in {root!r} ({source}, split {split!r})')
  shards = min(shards, len(kept))
  os.makedirs(out_dir, exist_ok=True)
  bounds = [len(kept) * s // shards for s in range(shards + 1)]
  shard_info = []
  for s in range(shards):
    name = f'{split}-{s:05d}-of-{shards:05d}.tfrecord'
    with tf.io.TFRecordWriter(os.path.join(out_dir, name)) as writer:
      for rel, label, data in kept[bounds[s]:bounds[s + 1]]:
        writer.write(_example(data, label, rel))
    shard_info.append({'file': name, 'num_examples': bounds[s + 1] - bounds[s]})
  index = {'format': sources.RECORDS_FORMAT, 'split': split, 'source': source,
           'num_examples': len(kept), 'class_names': list(class_names), 'shards': shard_info,
           'skipped': skipped}
  tmp = os.path.join(out_dir, f'.{split}.json.tmp')
  with open(tmp, 'w') as f:
    json.dump(index, f, indent=1)
  os.replace(tmp, os.path.join(out_dir, f'{split}.json'))
  return index


def main(argv=None):
  from absl import app, flags  # pylint: disable=g-import-not-at-top,g-multiple-import
  flags.DEFINE_string('source', None, 'folder:PATH to convert', required=True)
  flags.DEFINE_string('out', None, 'output folder', required=True)
  flags.DEFINE_list('splits', ['train'], 'splits to convert (PATH/<split>, else PATH)')
  flags.DEFINE_integer('shards', 1, 'number of TFRecord shards per split')
  flags.DEFINE_bool('verify', False, 'decode every image and leave out those that fail')

  def run(_):
    fl = flags.FLAGS
    for split in fl.splits:
      index = prepare(fl.source, fl.out, split, fl.shards, fl.verify)
      print(f'{split}: {index["num_examples"]} images in {len(index["shards"])} shards, '
            f'{len(index["skipped"])} skipped -> records:{fl.out}')

  app.run(run, argv=argv or sys.argv)


if __name__ == '__main__':
  main()
