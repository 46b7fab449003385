"""Evaluate a training run's checkpoint: kNN (+ linear probe) and the baselines, as JSON.

    python -m jssl.eval --workdir runs/simclr-tiny [--linear_probe] [--step N] [--nobaselines]
        [--pictures]

Reads the run's config (workdir/config.json, written by `python -m jssl.main`; or `--config`),
restores the checkpoint (the latest, or `--step`), and evaluates the backbone's frozen features:
the kNN bank is the config's training split (`data.source`, `data.train_split`), the queries
its eval split (`data.eval_source`, `data.eval_split`), both through the eval recipe. The
baselines are raw pixels (`data.image_size`) and the same network freshly initialized
(`config.seed`). With `--pictures`, the same features also draw neighbours.png, map_pca.png
and map_umap.png into the workdir (`jssl.eval.pictures`). Progress goes to stdout; the last
stdout line is one JSON object.
"""

import json
import os
import sys
import time

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None, 'The training run folder (config.json, checkpoints/).')
config_flags.DEFINE_config_file('config', None, 'Config file (default: workdir/config.json).',
                                lock_config=False)
flags.DEFINE_integer('step', None, 'Checkpoint step (default: the latest).')
flags.DEFINE_bool('linear_probe', None,
                  'Train the linear probe (default: config.eval.linear_probe).')
flags.DEFINE_bool('baselines', True, 'Also evaluate raw pixels and the random-init network.')
flags.DEFINE_integer('batch_size', None, 'Feature extraction batch (default: config.eval.batch_size'
                     ' or 512).')
flags.DEFINE_integer('max_train_examples', 0, 'Cap on the kNN bank / probe training set (0: all).')
flags.DEFINE_string('output', None, 'Also write the JSON result to this file.')
flags.DEFINE_bool('pictures', False, 'Also write neighbours.png (eval images and their nearest '
                  'training images), map_pca.png and, with umap-learn, map_umap.png to the '
                  'workdir.')
flags.mark_flag_as_required('workdir')


def log(msg: str) -> None:
  print(f'[jssl.eval] {msg}', flush=True)


def load_config(workdir: str, override=None):
  """The run's ConfigDict: `override` (from --config) or workdir/config.json."""
  if override is not None:
    return override
  from jssl.train import runs  # pylint: disable=g-import-not-at-top
  return runs.read_config(workdir)


class GlobalBatches:
  """Host batches -> global arrays on `mesh`, keeping the host iterator's `len()`."""

  def __init__(self, host_batches, mesh):
    self.host_batches, self.mesh = host_batches, mesh

  def __len__(self):
    return len(self.host_batches)

  def __iter__(self):
    from jssl.data import feeding  # pylint: disable=g-import-not-at-top
    return (feeding.global_batch(b, self.mesh) for b in self.host_batches)


def batches(data_cfg, batch_size: int, mesh, *, train: bool, raw: bool = False,
            max_examples: int = 0):
  """Global batches of every example of the train (or eval) split: the eval recipe's views,
  or with `raw` the images resized to `data.image_size` (uint8); with `max_examples` only that
  many, spread evenly over the split (a class-sorted folder keeps every class)."""
  import jax  # pylint: disable=g-import-not-at-top
  from jssl.data import pipeline  # pylint: disable=g-import-not-at-top (TensorFlow)
  source = data_cfg.source if train else data_cfg.eval_source
  split = data_cfg.train_split if train else data_cfg.eval_split
  it = pipeline.eval_iterator(data_cfg, batch_size, split=split, source=source, raw=raw,
                              max_examples=max_examples, process_index=jax.process_index(),
                              process_count=jax.process_count())
  return GlobalBatches(it, mesh)


def main(argv):
  del argv
  if not FLAGS['verbosity'].present:  # orbax's INFO lines would drown the progress lines
    logging.set_verbosity(logging.WARNING)
  import jax  # pylint: disable=g-import-not-at-top
  from jssl.data import pipeline  # pylint: disable=g-import-not-at-top
  from jssl.eval import evaluate, features, pictures  # pylint: disable=g-import-not-at-top
  from jssl.train import runs, sharding, step as step_lib  # pylint: disable=g-import-not-at-top

  t0 = time.time()
  workdir = FLAGS.workdir
  config = load_config(workdir, FLAGS.config)
  eval_cfg = evaluate.eval_config()
  eval_cfg.update(config.get('eval', {}))
  if FLAGS.linear_probe is not None:
    eval_cfg.linear_probe = FLAGS.linear_probe
  eval_cfg.max_train_examples = cap = FLAGS.max_train_examples
  batch_size = FLAGS.batch_size or int(eval_cfg.get('batch_size', 512))
  mesh = sharding.make_mesh()
  sharding.check_batch_size(batch_size, mesh)
  data = config.data
  info = pipeline.dataset_info(data.eval_source, data.eval_split, data.data_dir,
                               data.synthetic.to_dict())
  num_classes = info['num_classes']
  log(f'{config.method.name} ({config.model.name}) from {workdir}; {num_classes} classes; '
      f'{jax.device_count()} devices')

  method, trained, fresh = runs.restore_state(config, workdir, FLAGS.step, mesh)
  ckpt_step = int(jax.device_get(trained.step))
  log(f'restored the checkpoint of step {ckpt_step}')
  features_fn = step_lib.make_features_fn(method, mesh)
  result = {'workdir': workdir, 'method': config.method.name, 'step': ckpt_step}

  t = time.time()
  trained_fn = features.bind(features_fn, trained.params, trained.batch_stats)
  # The pipeline already caps the bank (max_examples), so every batch is read and kept.
  train_batches = batches(data, batch_size, mesh, train=True, max_examples=cap)
  eval_batches = batches(data, batch_size, mesh, train=False)
  if FLAGS.pictures:
    train_batches, eval_batches = pictures.RecordIndex(train_batches), pictures.RecordIndex(
        eval_batches)
  train_feats, train_labels = features.extract_features(trained_fn, train_batches)
  eval_feats, eval_labels = features.extract_features(trained_fn, eval_batches)
  result.update(evaluate.evaluate_features(train_feats, train_labels, eval_feats, eval_labels,
                                           num_classes=num_classes, eval_cfg=eval_cfg))
  result.update(num_train=int(train_labels.shape[0]), num_eval=int(eval_labels.shape[0]))
  log(f'trained: kNN top-1 {result["knn_top1"]:.4f}'
      + (f', linear top-1 {result["linear_top1"]:.4f}' if 'linear_top1' in result else '')
      + f' ({time.time() - t:.0f}s)')

  if FLAGS.pictures:
    t = time.time()
    paths = []
    if jax.process_index() == 0:
      paths = pictures.write_pictures(
          workdir, data,
          pictures.SplitFeatures(train_feats, train_labels, train_batches.index),
          pictures.SplitFeatures(eval_feats, eval_labels, eval_batches.index),
          class_names=info['class_names'], title=f'{config.method.name}, step {ckpt_step}',
          log=log)
      log(f'wrote {", ".join(os.path.basename(p) for p in paths)} ({time.time() - t:.0f}s)')
    result['pictures'] = [os.path.basename(p) for p in paths]

  if FLAGS.baselines:
    t = time.time()
    result.update(evaluate.baselines(
        batches(data, batch_size, mesh, train=True, raw=True, max_examples=cap),
        batches(data, batch_size, mesh, train=False, raw=True),
        features.bind(features_fn, fresh.params, fresh.batch_stats), num_classes=num_classes,
        eval_cfg=eval_cfg,
        train_batches=batches(data, batch_size, mesh, train=True, max_examples=cap),
        eval_batches=batches(data, batch_size, mesh, train=False)))
    log(f'baselines: pixels {result["knn_top1_pixels"]:.4f}, random init '
        f'{result["knn_top1_random_init"]:.4f} ({time.time() - t:.0f}s)')

  result['seconds'] = round(time.time() - t0, 1)
  line = json.dumps(result)
  if FLAGS.output and jax.process_index() == 0:
    with open(FLAGS.output, 'w') as f:
      f.write(line + '\n')
  print(line, flush=True)
  sys.stdout.flush()


if __name__ == '__main__':
  app.run(main)
