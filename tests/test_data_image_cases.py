"""Image files beyond the plain JPEG: each is read correctly, or skipped and reported by path."""

import io
import logging
import os

import numpy as np
import pytest
from PIL import Image
import tensorflow as tf

from jssl.data import config as config_lib
from jssl.data import pipeline, sources


class _Identity:
  """A stand-in recipe: the image resized to 8x8 as the one view."""
  view_shapes = {'view_0': (8, 8, 3)}

  def __call__(self, image, seed):
    del seed
    return {'view_0': tf.image.resize(image, [8, 8]) / 255.0}


def _save(img, fmt, **kw):
  buffer = io.BytesIO()
  img.save(buffer, format=fmt, **kw)
  return buffer.getvalue()


def _jpeg_declaring(record: bytes, height: int, width: int) -> bytes:
  """`record` (a JPEG) with its start-of-frame header patched to declare height x width."""
  at = record.index(b'\xff\xc0')
  return (record[:at + 5] + height.to_bytes(2, 'big') + width.to_bytes(2, 'big')
          + record[at + 9:])


@pytest.fixture()
def odd_folder(tmp_path):
  rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8))
  frames = [Image.new('RGB', (12, 12), c) for c in ((255, 0, 0), (0, 255, 0))]
  files = {
      'a_plain.jpg': _save(rgb, 'JPEG'),
      'b_cmyk.jpg': _save(Image.new('CMYK', (16, 16), (0, 128, 255, 0)), 'JPEG'),
      'c_16bit.png': _save(Image.fromarray(np.full((10, 10), 40000, np.uint16)), 'PNG'),
      'd_one_pixel.png': _save(Image.new('RGB', (1, 1), (10, 200, 30)), 'PNG'),
      'e_animated.gif': _save(frames[0], 'GIF', save_all=True, append_images=frames[1:]),
      'f_png_named.jpg': _save(rgb, 'PNG'),
      'g_bomb.png': _save(Image.new('1', (10_000, 9_000)), 'PNG'),  # 90M pixels, ~10 KB
      'g2_bomb.jpg': _jpeg_declaring(_save(rgb, 'JPEG'), 60_000, 60_000),  # 3.6G pixels
  }
  folder = tmp_path / 'data' / 'c'
  folder.mkdir(parents=True)
  for name, data in files.items():
    (folder / name).write_bytes(data)
  os.symlink('h_loop.jpg', folder / 'h_loop.jpg')  # a link to itself
  cfg = config_lib.data_config()
  cfg.source = cfg.eval_source = f'folder:{tmp_path / "data"}'
  return cfg, folder


def test_odd_images_are_read_or_skipped_and_reported(odd_folder, caplog):
  cfg, folder = odd_folder
  caplog.set_level(logging.WARNING)
  ev = pipeline.eval_iterator(cfg, 8, recipe=_Identity())
  batch = list(ev)[0]
  names = sorted(os.listdir(folder))[:-1]  # the looping link is left out when listing
  assert sorted(os.listdir(folder))[-1] == 'h_loop.jpg'
  assert f'skipping {folder / "h_loop.jpg"}: a broken or looping symbolic link' in caplog.text
  assert int(batch['valid'].sum()) == 6
  valid = dict(zip(names, batch['valid'].astype(bool)))
  readable = ['a_plain.jpg', 'b_cmyk.jpg', 'c_16bit.png', 'd_one_pixel.png', 'e_animated.gif',
              'f_png_named.jpg']
  assert all(valid[n] for n in readable), valid
  assert not valid['g_bomb.png'] and not valid['g2_bomb.jpg']
  reported = {os.path.basename(p) for p in ev.corrupt_files}
  assert reported == {'g_bomb.png', 'g2_bomb.jpg'}, ev.corrupt_files
  assert 'above the limit' in caplog.text and str(folder / 'g_bomb.png') in caplog.text
  views = dict(zip(names, batch['view_0']))
  np.testing.assert_allclose(views['d_one_pixel.png'][0, 0], np.array([10, 200, 30]) / 255,
                             atol=1e-6)
  assert views['e_animated.gif'][..., 0].mean() > 0.9  # the first (red) frame
  assert abs(views['c_16bit.png'].mean() - 40000 / 65535) < 0.02  # scaled to 8 bits


def test_pixel_count_reads_headers_without_decoding():
  for fmt, size in (('PNG', (300, 20)), ('GIF', (7, 9)), ('BMP', (5, 6))):
    record = _save(Image.new('RGB', size), fmt)
    assert int(sources.pixel_count(tf.constant(record))) == size[0] * size[1], fmt
  for kw in ({}, {'progressive': True}):  # baseline and progressive frame headers
    record = _save(Image.new('RGB', (33, 12)), 'JPEG', **kw)
    assert int(sources.pixel_count(tf.constant(record))) == 33 * 12, kw
  exif = Image.Exif()
  exif[0x010F] = 'a camera maker ' * 50  # an APP1 segment before the frame header
  record = _save(Image.new('RGB', (33, 12)), 'JPEG', exif=exif)
  assert b'\xff\xe1' in record[:record.index(b'\xff\xc0')]
  assert int(sources.pixel_count(tf.constant(record))) == 396
  assert int(sources.pixel_count(tf.constant(_jpeg_declaring(record, 60_000, 60_000)))) == 36e8
  cut = record[:record.index(b'\xff\xc0') + 4]  # truncated inside the frame header
  for bad in (cut, b'\xff\xd8\xff' + bytes(range(256)) * 4, b'not an image'):
    assert int(sources.pixel_count(tf.constant(bad))) == 0
