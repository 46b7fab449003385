"""Image sources: folder labels, RGB conversion, corrupt files, errors, embedded, synthetic,
prepared records and TFDS."""

import io
import os

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip('tensorflow')

from jssl.data import config as config_lib  # noqa: E402
from jssl.data import embedded  # noqa: E402
from jssl.data import pipeline  # noqa: E402
from jssl.data import sources  # noqa: E402


def _png(mode, size=(10, 6), color=None):
  buf = io.BytesIO()
  image = Image.new(mode, size, color)
  if mode == 'P':
    image.putpalette([0, 0, 255] * 256)  # every palette entry blue
  image.save(buf, format='PNG')
  return buf.getvalue()


def _jpeg(color=(200, 30, 30), size=(10, 6), mode='RGB'):
  buf = io.BytesIO()
  Image.new(mode, size, color).save(buf, format='JPEG', quality=95)
  return buf.getvalue()


def _write(path, data):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  """Two classes with RGB/gray JPEG and RGBA/palette PNG, plus a non-image file."""
  root = str(tmp_path_factory.mktemp('folder'))
  _write(f'{root}/dog/a.JPG', _jpeg((200, 30, 30)))
  _write(f'{root}/dog/b.png', _png('RGBA', color=(10, 200, 10, 0)))
  _write(f'{root}/dog/notes.txt', b'not an image')
  _write(f'{root}/cat/c.jpeg', _jpeg(128, mode='L'))
  _write(f'{root}/cat/d.png', _png('P', color=3))
  return root


def _decode(src, i):
  record, label = src.read(tf.constant(i, tf.int64))
  return src.decode(record, tf.constant(i, tf.int64)).numpy(), int(label)


def test_folder_labels_from_sorted_class_folders_and_rgb_conversion(folder):
  src = sources.open_source(f'folder:{folder}', 'train')
  assert src.class_names == ('cat', 'dog') and src.num_classes == 2 and src.labeled
  assert src.num_examples == 4  # notes.txt ignored
  assert [os.path.basename(src.describe(i)) for i in range(4)] == ['c.jpeg', 'd.png', 'a.JPG',
                                                                   'b.png']
  images = [_decode(src, i) for i in range(4)]
  assert [label for _, label in images] == [0, 0, 1, 1]
  for image, _ in images:
    assert image.shape == (6, 10, 3) and image.dtype == np.uint8
  gray, palette, rgb, rgba = (img for img, _ in images)
  np.testing.assert_allclose(gray.reshape(-1, 3).mean(0), [128] * 3, atol=2)
  np.testing.assert_array_equal(palette.reshape(-1, 3)[0], [0, 0, 255])
  np.testing.assert_allclose(rgb.reshape(-1, 3).mean(0), [200, 30, 30], atol=6)
  np.testing.assert_array_equal(rgba.reshape(-1, 3)[0], [10, 200, 10])


def test_flat_folder_is_unlabeled(tmp_path):
  _write(f'{tmp_path}/x.png', _png('RGB', color=(1, 2, 3)))
  _write(f'{tmp_path}/y.jpg', _jpeg())
  _write(f'{tmp_path}/readme.md', b'hi')
  src = sources.open_source(f'folder:{tmp_path}', 'train')
  assert src.num_examples == 2 and not src.labeled and src.num_classes == 0
  assert _decode(src, 0)[1] == -1


def test_folder_split_subfolder_is_used_when_present(tmp_path):
  _write(f'{tmp_path}/train/a/x.png', _png('RGB'))
  _write(f'{tmp_path}/test/a/y.png', _png('RGB'))
  _write(f'{tmp_path}/test/b/z.png', _png('RGB'))
  assert sources.open_source(f'folder:{tmp_path}', 'train').num_examples == 1
  assert sources.open_source(f'folder:{tmp_path}', 'test').class_names == ('a', 'b')


def test_errors_name_the_path_or_scheme(tmp_path):
  with pytest.raises(FileNotFoundError, match='no/such/dir'):
    sources.open_source(f'folder:{tmp_path}/no/such/dir', 'train')
  _write(f'{tmp_path}/empty/a/readme.txt', b'x')
  with pytest.raises(ValueError, match='no images.*empty'):
    sources.open_source(f'folder:{tmp_path}/empty', 'train')
  with pytest.raises(ValueError, match="'ftp'"):
    sources.open_source('ftp://x', 'train')
  with pytest.raises(FileNotFoundError, match='nowhere'):
    sources.open_source(f'records:{tmp_path}/nowhere', 'train')
  cfg = config_lib.data_config()
  cfg.corrupt = 'ignore'
  with pytest.raises(ValueError, match='data.corrupt'):
    config_lib.validate_data_config(cfg)
  cfg = config_lib.data_config()
  cfg.eval_source = 'imagenet'
  with pytest.raises(ValueError, match='data.eval_source.*imagenet'):
    config_lib.validate_data_config(cfg)


class _Identity:
  """A stand-in recipe: the image resized to 8x8 as the one view."""
  view_shapes = {'view_0': (8, 8, 3)}

  def __call__(self, image, seed):
    del seed
    return {'view_0': tf.image.resize(image, [8, 8]) / 255.0}


@pytest.fixture()
def corrupt_folder(tmp_path):
  """6 good JPEGs with 2 bad ones: garbage bytes named .jpg and a truncated JPEG."""
  good = _jpeg(size=(16, 16))
  for k in range(6):
    _write(f'{tmp_path}/c/{k}.jpg', good)
  _write(f'{tmp_path}/c/2.jpg', b'this is not a jpeg')
  _write(f'{tmp_path}/c/4.jpg', good[:len(good) // 2])
  cfg = config_lib.data_config()
  cfg.source = cfg.eval_source = f'folder:{tmp_path}'
  return cfg, {f'{tmp_path}/c/2.jpg', f'{tmp_path}/c/4.jpg'}


def test_corrupt_images_are_skipped_counted_and_named(corrupt_folder, caplog):
  cfg, bad = corrupt_folder
  it = pipeline.train_iterator(cfg, 6, seed=0, recipe=_Identity())
  batch = next(it)
  assert set(it.corrupt_files) == bad and all(c == 1 for c in it.corrupt_files.values())
  assert all(p in caplog.text for p in bad)
  assert not set(batch['index'].tolist()) & {2, 4}  # replaced by the next readable examples
  ev = pipeline.eval_iterator(cfg, 4, recipe=_Identity())
  batches = list(ev)
  valid = np.concatenate([b['valid'] for b in batches])
  np.testing.assert_array_equal(valid, [1, 1, 0, 1, 0, 1, 0, 0])
  assert set(ev.corrupt_files) == bad


def test_corrupt_image_is_fatal_with_fail(corrupt_folder):
  cfg, _ = corrupt_folder
  cfg.corrupt = 'fail'
  with pytest.raises(ValueError, match=r'c/[24]\.jpg'):
    list(pipeline.eval_iterator(cfg, 4, recipe=_Identity()))


def test_embedded_sizes_balance_and_decoding():
  for split, n in (('train', 10000), ('test', 2000)):
    info = pipeline.dataset_info('embedded', split)
    assert info['num_examples'] == n and info['num_classes'] == 10
    _, labels, names = embedded.load_split(split)
    np.testing.assert_array_equal(np.bincount(labels), [n // 10] * 10)
  assert names[0] == 'airplane' and names[-1] == 'truck'
  src = sources.open_source('embedded', 'test')
  image, label = _decode(src, 1999)
  assert image.shape == (32, 32, 3) and label == 9
  assert os.path.getsize(embedded.PATH) < 15e6
  with pytest.raises(ValueError, match="'val'"):
    sources.open_source('embedded', 'val')


def test_synthetic_is_deterministic_from_the_index():
  src = sources.open_source('synthetic', 'train', synthetic={'image_size': 12, 'num_examples': 50,
                                                             'num_classes': 7})
  a, la = _decode(src, 9)
  b, lb = _decode(src, 9)
  c, _ = _decode(src, 10)
  assert a.shape == (12, 12, 3) and a.dtype == np.uint8 and la == lb == 2
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_prepare_round_trip_to_records(folder, tmp_path):
  from jssl.data import prepare  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'records')
  index = prepare.prepare(f'folder:{folder}', out, 'train', shards=3)
  assert index['num_examples'] == 4 and len(index['shards']) == 3 and not index['skipped']
  src = sources.open_source(f'records:{out}', 'train')
  ref = sources.open_source(f'folder:{folder}', 'train')
  assert src.class_names == ref.class_names and src.num_examples == 4
  for i in range(4):
    image, label = _decode(src, i)
    ref_image, ref_label = _decode(ref, i)
    assert label == ref_label
    np.testing.assert_array_equal(image, ref_image)
  shard = '-00002-of-00003.tfrecord'
  assert src.describe(3).endswith(f'{shard} record 1 ({os.path.join("dog", "b.png")})')
  with pytest.raises(FileNotFoundError, match="split 'test'"):
    sources.open_source(f'records:{out}', 'test')


def test_prepare_cli_skips_non_images_and_records_feed_the_pipeline(tmp_path):
  from jssl.data import prepare  # pylint: disable=g-import-not-at-top
  good = _jpeg(size=(16, 16))
  for k in range(5):
    _write(f'{tmp_path}/in/train/{"ab"[k % 2]}/{k}.jpg', good if k != 3 else b'garbage')
  with pytest.raises(SystemExit) as done:
    prepare.main(['prepare', f'--source=folder:{tmp_path}/in', f'--out={tmp_path}/out',
                  '--splits=train', '--shards=2'])
  assert done.value.code in (0, None)
  src = sources.open_source(f'records:{tmp_path}/out', 'train')
  assert src.num_examples == 4
  cfg = config_lib.data_config()
  cfg.eval_source, cfg.eval_split = f'records:{tmp_path}/out', 'train'
  batch = next(pipeline.eval_iterator(cfg, 4, recipe=_Identity()))
  np.testing.assert_array_equal(batch['label'], [0, 0, 0, 1])
  assert batch['valid'].all()


def test_tfds_source_random_access_matches_as_dataset(tmp_path):
  tfds = pytest.importorskip('tensorflow_datasets')

  class JsslTinyImages(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version('1.0.0')

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          'id': np.int64, 'picture': tfds.features.Image(shape=(8, 8, 3)),
          'kind': tfds.features.ClassLabel(names=['a', 'b', 'c'])}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples(10), 'test': self._generate_examples(4)}

    def _generate_examples(self, n):
      for i in range(n):
        yield i, {'id': i, 'picture': np.full((8, 8, 3), i * 20, np.uint8), 'kind': i % 3}

  for fmt in ('tfrecord', 'array_record'):
    data_dir = str(tmp_path / fmt)
    tfds.builder('jssl_tiny_images', data_dir=data_dir, file_format=fmt).download_and_prepare()
    src = sources.open_source('tfds:jssl_tiny_images', 'train', data_dir=data_dir)
    assert src.num_examples == 10 and src.class_names == ('a', 'b', 'c')
    builder = tfds.builder('jssl_tiny_images', data_dir=data_dir)
    if fmt == 'tfrecord':  # the order of as_dataset without shuffling
      ref = list(builder.as_dataset(split='train', shuffle_files=False).as_numpy_iterator())
    else:
      ref = builder.as_data_source(split='train')
    for i, ex in enumerate(ref):
      image, label = _decode(src, i)
      assert label == ex['kind']
      np.testing.assert_array_equal(image, ex['picture'])
    part = sources.open_source('tfds:jssl_tiny_images', 'train[2:5]', data_dir=data_dir)
    assert part.num_examples == 3
  with pytest.raises(FileNotFoundError, match='not prepared'):
    sources.open_source('tfds:jssl_tiny_images', 'train', data_dir=str(tmp_path / 'none'))
  with pytest.raises(ValueError, match="no split 'val'"):
    sources.open_source('tfds:jssl_tiny_images', 'val', data_dir=data_dir)
