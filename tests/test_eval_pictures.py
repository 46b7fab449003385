"""jssl.eval.pictures: nearest neighbours against a float64 brute force, the grid's borders, the
PCA map against numpy's SVD, and the writers on a small synthetic source."""

import io
import os
import sys
import types

import numpy as np
import pytest
from PIL import Image

from jssl.eval import pictures


def _cosine_top_k(queries, bank, k):
  q = queries.astype(np.float64)
  b = bank.astype(np.float64)
  sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1,
                                                                               keepdims=True)).T
  return np.argsort(-sims, axis=1, kind='stable')[:, :k]


def test_nearest_matches_a_float64_brute_force_across_chunks():
  rng = np.random.default_rng(0)
  bank = rng.normal(size=(300, 16)).astype(np.float32) * rng.uniform(0.1, 5, (300, 1))
  queries = rng.normal(size=(50, 16)).astype(np.float32)
  got = pictures.nearest(queries, bank, 7, chunk_size=16)
  assert got.shape == (50, 7) and got.dtype == np.int64
  np.testing.assert_array_equal(got, _cosine_top_k(queries, bank, 7))
  np.testing.assert_array_equal(pictures.nearest(queries, bank, 7, chunk_size=1000), got)


def test_nearest_clips_k_to_the_bank_and_orders_ties_by_row():
  bank = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 0.0], [1.0, 0.0]], np.float32)
  got = pictures.nearest(np.array([[3.0, 0.0]], np.float32), bank, 10)
  np.testing.assert_array_equal(got, [[0, 2, 3, 1]])  # rows 0, 2, 3 tie at cosine 1
  with pytest.raises(ValueError, match='same F'):
    pictures.nearest(np.zeros((1, 3)), bank, 2)


def test_pick_queries_one_per_class_then_spread_and_without_labels():
  labels = np.repeat(np.arange(4), 8)  # a class-sorted split
  rows = pictures.pick_queries(labels, 8)
  assert len(rows) == 8 and len(set(rows.tolist())) == 8
  np.testing.assert_array_equal(labels[rows[:4]], [0, 1, 2, 3])
  np.testing.assert_array_equal(pictures.pick_queries(labels, 8), rows)  # deterministic
  np.testing.assert_array_equal(pictures.pick_queries(np.full(20, -1), 4), [0, 5, 10, 15])
  assert len(pictures.pick_queries(labels, 100)) == 32
  many = np.arange(100)  # more classes than queries: the classes are spread too
  np.testing.assert_array_equal(pictures.pick_queries(many, 4), [0, 25, 50, 75])


def _pixel(grid, box, dy=0, dx=0):
  top, left, _ = box
  return tuple(grid[top + dy, left + dx])


def test_neighbour_grid_shape_and_border_colours():
  rng = np.random.default_rng(1)
  queries = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
  bank = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
  indices = np.array([[0, 1], [2, 0]])
  grid = pictures.neighbour_grid(queries, np.array([5, 7]), bank, np.array([5, 6, 7]), indices,
                                 class_names=[f'class {c}' for c in range(8)])
  side = pictures.cell_side(16)
  assert side == 64
  next_row, _, _ = pictures.cell_box(2, 0, side)
  _, left, size = pictures.cell_box(0, 2, side)
  assert grid.dtype == np.uint8 and grid.shape == (next_row, left + size + pictures.PAD, 3)
  assert _pixel(grid, pictures.cell_box(0, 0, side)) == pictures.GREY  # the query
  assert _pixel(grid, pictures.cell_box(0, 1, side)) == pictures.GREEN  # bank 0: label 5 == 5
  assert _pixel(grid, pictures.cell_box(0, 2, side)) == pictures.RED  # bank 1: label 6 != 5
  assert _pixel(grid, pictures.cell_box(1, 1, side)) == pictures.GREEN  # bank 2: 7 == 7
  assert _pixel(grid, pictures.cell_box(1, 2, side), size - 1, size - 1) == pictures.RED
  # Inside the border: the raw pixels, magnified 4x (nearest).
  bw = pictures.border_width(side)
  top, left, _ = pictures.cell_box(1, 2, side)
  inner = grid[top + bw:top + bw + side, left + bw:left + bw + side]
  np.testing.assert_array_equal(inner, np.repeat(np.repeat(bank[0], 4, 0), 4, 1))
  top, left, _ = pictures.cell_box(0, 0, side)
  np.testing.assert_array_equal(grid[top + bw:top + bw + side:4, left + bw:left + bw + side:4],
                                queries[0])
  # Without labels every border is grey; floats in [0, 1] are drawn as uint8.
  plain = pictures.neighbour_grid(queries / 255.0, None, bank, None, indices)
  assert plain.shape == grid.shape
  assert _pixel(plain, pictures.cell_box(0, 2, side)) == pictures.GREY


def test_pca_2d_matches_the_svd_projection_and_explains_the_most_variance():
  rng = np.random.default_rng(2)
  x = rng.normal(size=(400, 12)) * np.linspace(3, 0.2, 12) @ np.linalg.qr(
      rng.normal(size=(12, 12)))[0]
  coords = pictures.pca_2d(x.astype(np.float32))
  centred = x - x.mean(0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  reference = centred @ vt[:2].T
  for j in range(2):
    sign = np.sign(coords[:, j] @ reference[:, j])
    np.testing.assert_allclose(coords[:, j], sign * reference[:, j], atol=1e-4)
  pca_var = pictures.explained_variance(x, coords).sum()
  for seed in range(20):
    proj = np.linalg.qr(np.random.default_rng(seed).normal(size=(12, 2)))[0]
    assert pca_var > pictures.explained_variance(x, centred @ proj).sum()
  assert pictures.pca_2d(np.ones((5, 1))).shape == (5, 2)


def _data_config(num_examples=24, side=8):
  from jssl.data import config as config_lib  # pylint: disable=g-import-not-at-top
  cfg = config_lib.data_config()
  cfg.source = cfg.eval_source = 'synthetic'
  cfg.image_size = side
  cfg.synthetic = {'image_size': side, 'num_examples': num_examples, 'num_classes': 3}
  return cfg


def test_read_images_gives_the_raw_eval_iterator_images():
  from jssl.data import pipeline  # pylint: disable=g-import-not-at-top
  cfg = _data_config()
  batch = next(iter(pipeline.eval_iterator(cfg, 8, raw=True)))
  rows = [1, 6, 3]
  np.testing.assert_array_equal(pictures.read_images(cfg, rows, train=False),
                                np.asarray(batch['image'])[rows])


def test_record_index_keeps_the_valid_rows_in_order():
  batches = [{'index': np.array([4, 5, 6]), 'valid': np.array([True, False, True])},
             {'index': np.array([9, 9]), 'valid': np.array([True, False])}]
  tap = pictures.RecordIndex(batches)
  assert len(tap) == 2 and list(tap) == batches
  np.testing.assert_array_equal(tap.index, [4, 6, 9])


def _png_size(path):
  with open(path, 'rb') as f:
    return Image.open(io.BytesIO(f.read())).size


def test_write_pictures_on_a_synthetic_source(tmp_path, monkeypatch):
  cfg = _data_config()
  rng = np.random.default_rng(3)
  labels = np.arange(24) % 3  # the synthetic source's labels
  split = pictures.SplitFeatures(rng.normal(size=(24, 6)).astype(np.float32), labels,
                                 np.arange(24))
  # A bank of every other training example: its rows are examples 0, 2, 4, ...
  bank = pictures.SplitFeatures(split.features[::2], labels[::2], np.arange(0, 24, 2))
  monkeypatch.setitem(sys.modules, 'umap', None)  # umap-learn not installed
  lines = []
  paths = pictures.write_pictures(str(tmp_path), cfg, bank, split, class_names=('a', 'b', 'c'),
                                  num_queries=4, k=3, log=lines.append)
  assert [os.path.basename(p) for p in paths] == ['neighbours.png', 'map_pca.png']
  assert len(lines) == 1 and 'umap-learn' in lines[0]
  side = pictures.cell_side(8)
  next_row, _, _ = pictures.cell_box(4, 0, side)
  _, left, size = pictures.cell_box(0, 3, side)
  assert _png_size(paths[0]) == (left + size + pictures.PAD, next_row)
  # Its neighbours are those of `nearest`, drawn from the images read at their dataset indices.
  rows = pictures.pick_queries(labels, 4)
  found = pictures.nearest(split.features[rows], bank.features, 3)
  grid = np.asarray(Image.open(paths[0]).convert('RGB'))
  bw = pictures.border_width(side)
  scale = side // 8
  for q in range(4):
    for j in range(3):
      top, left, _ = pictures.cell_box(q, j + 1, side)
      drawn = grid[top + bw:top + bw + side:scale, left + bw:left + bw + side:scale]
      want = pictures.read_images(cfg, [bank.index[found[q, j]]], train=True)[0]
      np.testing.assert_array_equal(drawn, want)
      colour = pictures.GREEN if bank.labels[found[q, j]] == labels[rows[q]] else pictures.RED
      assert tuple(grid[top, left]) == colour

  # With umap-learn (here a stand-in with its interface), map_umap.png too.
  class FakeUMAP:
    def __init__(self, n_components, n_neighbors, random_state):
      assert n_components == 2 and n_neighbors < 20 and random_state == 0

    def fit_transform(self, x):
      assert x.shape == (20, 6)  # max_points, spread over the 24 rows
      return x[:, :2]

  monkeypatch.setitem(sys.modules, 'umap', types.SimpleNamespace(UMAP=FakeUMAP))
  paths = pictures.write_maps(str(tmp_path / 'maps'), split, class_names=('a', 'b', 'c'),
                              max_points=20)
  assert [os.path.basename(p) for p in paths] == ['map_pca.png', 'map_umap.png']
  assert all(_png_size(p)[0] > 100 for p in paths)
  lines = []
  paths = pictures.write_maps(str(tmp_path / 'few'), split, max_points=10, log=lines.append)
  assert [os.path.basename(p) for p in paths] == ['map_pca.png']
  assert lines == ['map_umap.png skipped: only 10 points']
