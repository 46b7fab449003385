"""`python -m jssl.eval` end to end on a class-sorted image folder: a short training run, then the
evaluation of its checkpoint, whole (with `--pictures`) and with a capped kNN bank
(`--max_train_examples`)."""

import json
import os
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='', TF_CPP_MIN_LOG_LEVEL='3')
CLASSES, PER_CLASS, SIDE = 4, 8, 16


def _write_folder(root):
  """root/{train,test}/class_c/*.png: class c is horizontal stripes of period 2 (c + 1) plus
  noise, so raw pixels separate the classes when every class is in the bank."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  rows = np.arange(SIDE)[:, None, None]
  for split in ('train', 'test'):
    for c in range(CLASSES):
      folder = os.path.join(root, split, f'class_{c}')
      os.makedirs(folder)
      stripes = 200.0 * ((rows // (c + 1)) % 2) * np.ones((SIDE, SIDE, 3))
      for i in range(PER_CLASS):
        image = np.clip(stripes + rng.uniform(0, 40, stripes.shape), 0, 255).astype(np.uint8)
        tf.io.write_file(os.path.join(folder, f'{i}.png'), tf.io.encode_png(image))


def _run(module, *args, cwd):
  out = subprocess.run([sys.executable, '-m', module, *args], cwd=cwd, env=ENV,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_eval_cli_whole_and_capped_bank_on_a_class_sorted_folder(tmp_path):
  data = str(tmp_path / 'data')
  _write_folder(data)
  workdir = str(tmp_path / 'run')
  source = f'folder:{data}'
  _run('jssl.main', '--config', os.path.join(ROOT, 'configs', 'simclr.py'), '--workdir', workdir,
       f'--config.data.source={source}', f'--config.data.eval_source={source}',
       f'--config.data.image_size={SIDE}', '--config.data.augment.image_size=8',
       f'--config.data.eval_augment.image_size={SIDE}', '--config.model.width=4',
       '--config.model.stage_sizes=(1,)', '--config.batch_size=8', '--config.total_steps=2',
       '--config.eval.batch_size=8', '--config.eval.knn_k=(3,)', '--config.eval.final=False',
       '--config.eval.at_start=False', '--config.eval.every_epochs=0',
       '--config.log.tensorboard=False', cwd=tmp_path)
  whole = _run('jssl.eval', '--workdir', workdir, '--batch_size=8', '--pictures', cwd=tmp_path)
  assert whole['step'] == 2 and whole['num_train'] == CLASSES * PER_CLASS
  # --pictures draws from the same features: the nearest-neighbour grid and the PCA map (and the
  # UMAP map only where umap-learn is installed).
  assert whole['pictures'][:2] == ['neighbours.png', 'map_pca.png']
  for name in whole['pictures']:
    with open(os.path.join(workdir, name), 'rb') as f:
      assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert whole['num_eval'] == CLASSES * PER_CLASS
  assert whole['knn_top1_pixels'] == 1.0  # the stripes are told apart by raw pixels
  # A bank of 8 of the 32 (class-sorted) training images: spread over the split it holds every
  # class, so raw pixels still classify every query; the first 8 would hold class 0 only
  # (25%). The trained and random-init features read the same capped bank (they once failed
  # with 'labels differ').
  capped = _run('jssl.eval', '--workdir', workdir, '--batch_size=8', '--max_train_examples=8',
                cwd=tmp_path)
  assert capped['num_train'] == 8 and capped['num_eval'] == CLASSES * PER_CLASS
  assert capped['knn_top1_pixels'] == 1.0
  for key in ('knn_top1', 'knn_top1_random_init'):
    assert 0.0 <= capped[key] <= 1.0
