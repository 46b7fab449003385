"""`python -m jssl.embed`: a run folder of random weights (no training), a small image folder in
two class sub-folders with one corrupt file, sharded over the 8 emulated devices."""

import io
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from jssl import embed as embed_cli
from test_export import ENV, ROOT, STEP, make_run, simclr_config

# (class, file, (height, width)); 16 px is the eval size, the others are resized and cropped
IMAGES = [('cat', f'{i}.png', (16, 16)) for i in range(4)] + [
    ('cat', 'wide.jpg', (16, 24)), ('dog', 'a.jpeg', (16, 16)), ('dog', 'tall.png', (20, 16))] + [
    ('dog', f'{i}.jpg', (16, 16)) for i in range(4)]
CORRUPT = ('dog', 'broken.jpg')


def write_folder(root, images=IMAGES, corrupt=CORRUPT):
  rng = np.random.default_rng(0)
  for cls, name, (h, w) in images:
    os.makedirs(os.path.join(root, cls), exist_ok=True)
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(os.path.join(root, cls, name), quality=95)
  if corrupt:
    with open(os.path.join(root, *corrupt), 'wb') as f:  # a JPEG signature, then noise
      f.write(b'\xff\xd8\xff\xe0' + rng.integers(0, 256, 200, dtype=np.uint8).tobytes())


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp('run'))
  method, state = make_run(workdir, simclr_config())
  return workdir, method, state


def reference_features(method, state, config, paths):
  """`method.features` of each file through the eval recipe, one image at a time."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jssl.data import pipeline  # pylint: disable=g-import-not-at-top
  recipe = pipeline.eval_recipe(config.data)
  views = []
  for p in paths:
    image = tf.io.decode_image(tf.io.read_file(p), channels=3, expand_animations=False)
    views.append(recipe(image, pipeline.example_seed(0, 0, 0))['view_0'].numpy())
  return np.asarray(jax.jit(method.features)(state.params, state.batch_stats, np.stack(views)))


def test_embeds_a_class_folder_skipping_the_corrupt_file(run, tmp_path):
  workdir, method, state = run
  root = str(tmp_path / 'images')
  write_folder(root)
  out = str(tmp_path / 'emb.npz')
  lines = []
  summary = embed_cli.embed(workdir, f'folder:{root}', out, batch_size=8, log=lines.append)
  got = np.load(out)
  n = len(IMAGES)
  assert summary['images'] == n and summary['skipped'] == 1 and summary['step'] == STEP
  assert got['features'].dtype == np.float32 and got['features'].shape == (n, 32)
  assert got['labels'].dtype == np.int32
  want_paths = sorted(os.path.join(root, c, f) for c, f, _ in IMAGES)
  assert list(got['paths']) == want_paths
  assert list(got['class_names']) == ['cat', 'dog']
  assert list(got['labels']) == [0 if '/cat/' in p else 1 for p in want_paths]
  assert list(got['skipped']) == [os.path.join(root, *CORRUPT)]
  assert str(got['method']) == 'simclr' and int(got['step']) == STEP
  want = reference_features(method, state, simclr_config(), want_paths)
  np.testing.assert_allclose(got['features'], want, atol=1e-5, rtol=1e-5)
  progress = [l for l in lines if re.fullmatch(r'\d+/\d+ images, [\d.]+ images/s, ETA \d+s', l)]
  assert progress and progress[-1].startswith(f'{n + 1}/{n + 1} images')
  assert any(os.path.join(root, *CORRUPT) in l for l in lines)


@pytest.mark.slow  # kept out of the default suite for its time
def test_flat_folder_has_no_labels(run, tmp_path):
  root = str(tmp_path / 'flat')
  os.makedirs(root)
  for i in range(3):
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 40 * i, np.uint8)).save(buf, format='PNG')
    with open(os.path.join(root, f'{i}.png'), 'wb') as f:
      f.write(buf.getvalue())
  out = str(tmp_path / 'flat.npz')
  embed_cli.embed(run[0], f'folder:{root}', out, log=lambda s: None)
  got = np.load(out)
  assert got['features'].shape == (3, 32) and list(got['labels']) == [-1, -1, -1]
  assert got['class_names'].shape == (0,) and got['skipped'].shape == (0,)
  assert list(got['paths']) == [os.path.join(root, f'{i}.png') for i in range(3)]


def test_bad_batch_size_is_refused(run, tmp_path):
  with pytest.raises(ValueError, match=r'--batch_size=12 must be a positive multiple'):
    embed_cli.embed(run[0], 'folder:/x', str(tmp_path / 'e.npz'), batch_size=12)


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'jssl.embed', *args], cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=300)


def test_a_folder_with_no_images_is_one_error_line(run, tmp_path):
  empty = tmp_path / 'empty' / 'a'
  empty.mkdir(parents=True)
  (empty / 'notes.txt').write_text('no image here')
  out = _cli('--workdir', run[0], '--source', f'folder:{empty.parent}', '--out',
             str(tmp_path / 'e.npz'))
  assert out.returncode == 2, out.stderr[-3000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and 'no images' in errors[0] and str(empty.parent) in errors[0]
  assert 'Traceback' not in out.stderr and not os.path.exists(tmp_path / 'e.npz')
