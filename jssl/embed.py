"""Embed every image of a folder (or any data source) with a training run's backbone.

    python -m jssl.embed --workdir runs/simclr-tiny --source folder:/data/photos --out emb.npz \
        [--batch_size N] [--step N] [--split S]

Restores the run's checkpoint (the latest, or `--step`), runs each image through the run's eval
recipe (`data.eval_recipe` / `data.eval_augment`: resize, centre crop) and `method.features`,
jitted with the batch sharded over all devices, and writes an npz:
- `features` float32 `[N, F]`, `paths` `[N]` str (each image's file), `labels` `[N]` int32
  (the class sub-folder's index in `class_names`; -1 in a flat folder), `class_names` `[C]`;
- `skipped` `[S]` str: the unreadable files (also listed on stderr), `step`, `method`.
A folder source is the folder itself (`--split S`: its sub-folder S); other sources
(`embedded`, `tfds:NAME`, `records:DIR`) read `--split` or the run's `data.eval_split`.
Progress (images done / total, images/s, ETA) goes to stderr, a JSON summary to stdout. Bad
input is one `error:` line and exit status 2.
"""

import json
import os
import sys
import time

from absl import app, flags, logging

from jssl import config_files


def _stderr(msg: str) -> None:
  print(f'[jssl.embed] {msg}', file=sys.stderr, flush=True)


def batch_size_for(requested, config, num_devices: int) -> int:
  """`requested`, or the run's `eval.batch_size` (256) rounded up to a multiple of the devices."""
  if requested is not None:
    if requested < 1 or requested % num_devices:
      raise ValueError(f'--batch_size={requested} must be a positive multiple of the number '
                       f'of devices ({num_devices})')
    return int(requested)
  default = int(config.get('eval', {}).get('batch_size', 256) or 256)
  return -(-default // num_devices) * num_devices


def open_images(config, source: str, split, batch_size: int):
  """The eval iterator over `source` (a folder: the folder itself unless `split`), corrupt
  files skipped; returns `(iterator, tidy)`, `tidy` cleaning the names it reports."""
  import jax  # pylint: disable=g-import-not-at-top
  from jssl.data import config as data_config  # pylint: disable=g-import-not-at-top
  from jssl.data import pipeline  # pylint: disable=g-import-not-at-top (TensorFlow)
  scheme = data_config.scheme_of(source)
  data = config.data.copy_and_resolve_references()
  data.corrupt = 'skip'
  if split is None and scheme == 'folder':  # the folder itself: its parent, split = its name
    path = os.path.abspath(source[len('folder:'):])
    if not os.path.isdir(path):
      raise data_config.DataNotFoundError(f'image folder not found: {path!r}')
    parent, split = os.path.split(path)
    source, split = (f'folder:{parent}', split) if split else (source, '.')
  it = pipeline.eval_iterator(data, batch_size, split=split or data.eval_split, source=source,
                              process_index=jax.process_index(),
                              process_count=jax.process_count())
  return it, (os.path.normpath if scheme == 'folder' else str)


def progress(done: int, total: int, seconds: float) -> str:
  rate = done / max(seconds, 1e-9)
  eta = (total - done) / rate if rate > 0 else float('inf')
  return f'{done}/{total} images, {rate:.1f} images/s, ETA {eta:.0f}s'


def embed(workdir: str, source: str, out: str, batch_size=None, step=None, split=None,
          log=_stderr) -> dict:
  """Writes the npz of every image of `source` (see the module docstring); returns a summary."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jssl.data import feeding  # pylint: disable=g-import-not-at-top
  from jssl.eval.features import to_host  # pylint: disable=g-import-not-at-top
  from jssl.export import check_run  # pylint: disable=g-import-not-at-top
  from jssl.train import runs, sharding  # pylint: disable=g-import-not-at-top
  from jssl.train import step as step_lib  # pylint: disable=g-import-not-at-top
  t0 = time.time()
  check_run(workdir, step)
  folder = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(folder):
    raise FileNotFoundError(f'--out={out!r}: the folder {folder} does not exist')
  config = runs.read_config(workdir)
  mesh = sharding.make_mesh()
  b = batch_size_for(batch_size, config, mesh.devices.size)
  try:
    it, tidy = open_images(config, source, split, b)
  except ValueError as e:
    raise ValueError(f'--source={source}: {e}') from None
  total = it.source.num_examples
  log(f'{total} images of {source} ({it.source.num_classes} classes); {config.method.name} '
      f'({config.model.name}) from {workdir}; batch {b} on {jax.device_count()} devices')
  method, trained, _ = runs.restore_state(config, workdir, step, mesh)
  features_fn = step_lib.make_features_fn(method, mesh)
  feats, index, labels = [], [], []
  start = last = time.time()
  for k, host in enumerate(it):
    batch = feeding.global_batch(host, mesh)
    f = features_fn(trained.params, trained.batch_stats, batch['view_0'])
    valid = to_host(batch['valid']).astype(bool)
    feats.append(to_host(f).astype(np.float32)[valid])
    index.append(to_host(batch['index'])[valid])
    labels.append(to_host(batch['label']).astype(np.int32)[valid])
    done = min((k + 1) * b, total)
    if time.time() - last >= 2.0 or done == total:
      log(progress(done, total, time.time() - start))
      last = time.time()
  skipped = sorted(tidy(p) for p in it.corrupt_files)
  if skipped:
    log(f'skipped {len(skipped)} unreadable image(s):')
    for p in skipped:
      log(f'  {p}')
  index = np.concatenate(index)
  paths = [tidy(it.source.describe(int(i))) for i in index]
  result = {
      'features': np.concatenate(feats), 'paths': np.array(paths, str),
      'labels': np.concatenate(labels), 'class_names': np.array(it.source.class_names, str),
      'skipped': np.array(skipped, str), 'step': np.int64(jax.device_get(trained.step)),
      'method': np.array(config.method.name)}
  if jax.process_index() == 0:
    tmp = f'{out}.tmp-{os.getpid()}'
    with open(tmp, 'wb') as fh:
      np.savez(fh, **result)
    os.replace(tmp, out)
  return {'out': out, 'images': int(len(index)), 'skipped': len(skipped),
          'feature_dim': int(result['features'].shape[-1]), 'step': int(result['step']),
          'seconds': round(time.time() - t0, 1)}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs each restore at INFO
  f = flags.FLAGS
  try:
    summary = embed(f.workdir, f.source, f.out, f.batch_size, f.step, f.split)
  except (ValueError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  print(json.dumps(summary), flush=True)


def define_flags() -> None:
  flags.DEFINE_string('workdir', None, 'The training run folder (config.json, checkpoints/).')
  flags.DEFINE_string('source', None, 'The images: folder:PATH (or embedded, tfds:NAME, ...).')
  flags.DEFINE_string('out', None, 'The npz file to write.')
  flags.DEFINE_integer('batch_size', None, 'Global batch (default: the run\'s eval.batch_size, '
                       'rounded up to a multiple of the devices).')
  flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
  flags.DEFINE_string('split', None, 'A folder\'s sub-folder (default: the folder itself), or '
                      'another source\'s split (default: the run\'s data.eval_split).')
  flags.mark_flags_as_required(['workdir', 'source', 'out'])


if __name__ == '__main__':
  define_flags()
  app.run(main, flags_parser=config_files.parse_flags)
