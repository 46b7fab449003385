"""Builds `jssl/data/embedded/cifar10_subset.npz` from CIFAR-10 tarballs (run once, offline).

    python -m jssl.data.make_embedded --cifar_dir /work/shared/data/cifar10 [--out PATH]

Each tarball (`train.tar.gz`, `test.tar.gz`) holds `<split>/<class>/<NNNN>.jpg`. For every class
(sorted by name) we keep the first N files in sorted file-name order (N = 1000 train, 200 test),
keeping the original JPEG bytes. See `jssl.data.embedded` for the file layout.
"""

import os
import sys
import tarfile

import numpy as np

PER_CLASS = {'train': 1000, 'test': 200}
DEFAULT_OUT = os.path.join(os.path.dirname(__file__), 'embedded', 'cifar10_subset.npz')


def read_split(tar_path: str, split: str, per_class: int):
  """Returns (class_names, list of JPEG bytes, labels) picked deterministically from a tarball."""
  if not os.path.isfile(tar_path):
    raise FileNotFoundError(f'CIFAR-10 tarball not found: {tar_path}')
  by_class = {}
  with tarfile.open(tar_path, 'r:gz') as tar:
    for member in tar:
      parts = member.name.strip('/').split('/')
      if member.isfile() and len(parts) == 3 and parts[0] == split and parts[2].endswith('.jpg'):
        by_class.setdefault(parts[1], {})[parts[2]] = tar.extractfile(member).read()
  names = sorted(by_class)
  if len(names) != 10:
    raise ValueError(f'{tar_path}: expected 10 class folders under {split}/, found {names}')
  blobs, labels = [], []
  for label, name in enumerate(names):
    files = sorted(by_class[name])
    if len(files) < per_class:
      raise ValueError(f'{tar_path}: class {name!r} has {len(files)} images < {per_class}')
    for f in files[:per_class]:
      blobs.append(by_class[name][f])
      labels.append(label)
  return names, blobs, labels


def build(cifar_dir: str, out: str) -> None:
  """Writes the embedded subset to `out` (compressed .npz, no pickled objects)."""
  arrays, class_names = {}, None
  for split, per_class in PER_CLASS.items():
    names, blobs, labels = read_split(os.path.join(cifar_dir, f'{split}.tar.gz'), split, per_class)
    if class_names is not None and names != class_names:
      raise ValueError(f'class names differ between splits: {class_names} vs {names}')
    class_names = names
    lengths = np.array([len(b) for b in blobs], np.int64)
    arrays[f'{split}_bytes'] = np.frombuffer(b''.join(blobs), np.uint8)
    arrays[f'{split}_offsets'] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    arrays[f'{split}_labels'] = np.array(labels, np.int32)
  arrays['class_names'] = np.array(class_names, dtype='<U16')
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  np.savez_compressed(out, **arrays)


def main(argv):
  import argparse  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--cifar_dir', required=True)
  parser.add_argument('--out', default=DEFAULT_OUT)
  args = parser.parse_args(argv)
  build(args.cifar_dir, args.out)
  print(f'wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)')


if __name__ == '__main__':
  main(sys.argv[1:])
