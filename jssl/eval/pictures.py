"""Pictures of frozen features: the nearest training images of a few queries, and 2-D maps.

`python -m jssl.eval --pictures` (through `write_pictures`) writes into the run's workdir:

- `neighbours.png`: one row per query image of the eval split, the query then its k nearest
  training images by cosine similarity of the features the kNN evaluation uses (`nearest`),
  drawn as raw pixels; a neighbour's border is green when its label is the query's, red when
  not (grey without labels), with its class name underneath (`neighbour_grid`);
- `map_pca.png`: the eval features on their first two principal components (`pca_2d`),
  coloured by label;
- `map_umap.png`: the same with UMAP, when umap-learn is installed (else skipped).

Everything but `read_images` (which reads the data source) and the writers is pure numpy.
"""

import io
import os
from typing import Callable, Iterable, Mapping, NamedTuple, Optional, Sequence

import numpy as np

GREEN = (30, 150, 60)
RED = (210, 40, 40)
GREY = (150, 150, 150)
GREY_FLOAT = tuple(c / 255.0 for c in GREY)
BACKGROUND = (255, 255, 255)
PAD = 4  # between cells
GAP = 12  # extra space between the query column and its neighbours
TEXT_HEIGHT = 14  # a line of text under each cell, and the header line


class SplitFeatures(NamedTuple):
  """One split's frozen features `[N, F]`, labels `[N]` (-1: unlabelled) and dataset indices
  `[N]` (the example each row came from)."""
  features: np.ndarray
  labels: np.ndarray
  index: np.ndarray


# ------------------------------------------------------------------------------ neighbours

def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
  """`x / max(||x||_2, eps)` over the last axis, in float32."""
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), eps)


def nearest(eval_features: np.ndarray, train_features: np.ndarray, k: int,
            chunk_size: int = 256) -> np.ndarray:
  """int64 `[Q, min(k, N)]`: the bank rows of largest cosine similarity to each query, best first.

  Queries go through in chunks of `chunk_size`, so memory is `O(N * F + chunk_size * N)`: a
  50k-image bank fits. Equal similarities are ordered by bank row.
  """
  queries, bank = l2_normalize(eval_features), l2_normalize(train_features)
  if queries.ndim != 2 or bank.ndim != 2 or queries.shape[1] != bank.shape[1]:
    raise ValueError(f'nearest: features must be [Q, F] and [N, F] with the same F, got '
                     f'{queries.shape} and {bank.shape}')
  k = min(int(k), bank.shape[0])
  if k < 1:
    raise ValueError(f'nearest: k must be >= 1 and the bank non-empty (k={k}, N={len(bank)})')
  out = np.empty((queries.shape[0], k), np.int64)
  for start in range(0, queries.shape[0], chunk_size):
    sims = queries[start:start + chunk_size] @ bank.T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top_sims = np.take_along_axis(sims, top, axis=1)
    order = np.lexsort((top, -top_sims), axis=1)
    out[start:start + chunk_size] = np.take_along_axis(top, order, axis=1)
  return out


def spread(n: int, num: int) -> np.ndarray:
  """`min(num, n)` row indices spread evenly over `range(n)`: `floor(j * n / num)`."""
  num = min(int(num), int(n))
  return np.arange(num, dtype=np.int64) * int(n) // max(num, 1)


def pick_queries(labels: np.ndarray, num: int) -> np.ndarray:
  """`min(num, N)` query rows, deterministic: with labels, one per class (the class's middle row;
  the classes spread over those present when there are more than `num`), topped up with rows
  spread over the split (`spread`)."""
  labels = np.asarray(labels)
  num = min(int(num), labels.size)
  classes = np.unique(labels[labels >= 0])
  picks = []
  if classes.size > 1:
    for c in classes[spread(classes.size, num)]:
      rows = np.flatnonzero(labels == c)
      picks.append(int(rows[rows.size // 2]))
  for row in [*spread(labels.size, num).tolist(), *range(labels.size)]:
    if len(picks) >= num:
      break
    if row not in picks:
      picks.append(int(row))
  return np.asarray(picks, np.int64)


def cell_side(image_side: int) -> int:
  """The drawn side of an image: small images magnified by an integer factor to >= 64 px,
  large ones shrunk to 128 px."""
  image_side = int(image_side)
  return image_side * max(1, 64 // image_side) if image_side <= 64 else min(image_side, 128)


def border_width(side: int) -> int:
  """The coloured border around a drawn image of `side` pixels."""
  return max(2, side // 20)


def cell_box(row: int, col: int, side: int) -> tuple[int, int, int]:
  """`(top, left, size)` of the bordered box of grid cell (row, col) (col 0: the query)."""
  size = side + 2 * border_width(side)
  top = TEXT_HEIGHT + PAD + row * (size + TEXT_HEIGHT + PAD)
  left = PAD + col * (size + PAD) + (GAP if col > 0 else 0)
  return top, left, size


def _as_uint8(images: np.ndarray) -> np.ndarray:
  """uint8 images as they are; floats taken to be in [0, 1]; one channel repeated to three."""
  images = np.asarray(images)
  if not np.issubdtype(images.dtype, np.integer):
    images = np.round(np.clip(images.astype(np.float32), 0.0, 1.0) * 255.0)
  images = np.clip(images, 0, 255).astype(np.uint8)
  if images.shape[-1] == 1:
    images = np.repeat(images, 3, axis=-1)
  return images


def _resize(image: np.ndarray, side: int) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if image.shape[:2] == (side, side):
    return image
  magnify = side >= max(image.shape[:2])
  resample = Image.Resampling.NEAREST if magnify else Image.Resampling.BOX
  return np.asarray(Image.fromarray(image).resize((side, side), resample))


def class_name(label: int, class_names: Optional[Sequence[str]] = None) -> str:
  """The class name of `label` ('' for an unlabelled -1; the number without names)."""
  label = int(label)
  if label < 0:
    return ''
  return str(class_names[label]) if class_names and label < len(class_names) else str(label)


def _border_colour(query_label, label) -> tuple[int, int, int]:
  if query_label is None or label is None or query_label < 0 or label < 0:
    return GREY
  return GREEN if query_label == label else RED


def _fit(draw, text: str, width: int, font) -> str:
  """`text` shortened (ending in '..') until it fits `width` pixels."""
  if draw.textlength(text, font=font) <= width:
    return text
  while text and draw.textlength(text + '..', font=font) > width:
    text = text[:-1]
  return text + '..' if text else ''


def neighbour_grid(query_images: np.ndarray, query_labels: Optional[np.ndarray],
                   bank_images: np.ndarray, bank_labels: Optional[np.ndarray],
                   indices: np.ndarray,
                   class_names: Optional[Sequence[str]] = None) -> np.ndarray:
  """An RGB uint8 picture: row q is `query_images[q]` then `bank_images[indices[q, j]]`, j < k.

  Images are `[N, H, W, C]` uint8 (or floats in [0, 1]), drawn square (`cell_side`). Each
  neighbour's border is GREEN when its label equals the query's, RED when not, GREY when either
  is missing (labels None or -1); the query's is GREY. The class name is written under each
  image. Cell positions: `cell_box`.
  """
  from PIL import Image, ImageDraw, ImageFont  # pylint: disable=g-import-not-at-top
  queries, bank = _as_uint8(query_images), _as_uint8(bank_images)
  indices = np.asarray(indices, np.int64)
  if queries.ndim != 4 or bank.ndim != 4 or indices.ndim != 2 or (
      indices.shape[0] != queries.shape[0]):
    raise ValueError(f'neighbour_grid: images must be [Q, H, W, C] and [N, H, W, C] and indices '
                     f'[Q, k]; got {queries.shape}, {bank.shape}, {indices.shape}')
  if indices.size and not 0 <= indices.min() <= indices.max() < bank.shape[0]:
    raise ValueError(f'neighbour_grid: indices must lie in [0, {bank.shape[0]})')
  rows, cols = indices.shape[0], indices.shape[1] + 1
  side = cell_side(max(queries.shape[1:3]))
  bw = border_width(side)
  _, last_left, size = cell_box(0, cols - 1, side)
  height, _, _ = cell_box(rows, 0, side)  # where a next row would start: the text fits above
  width = last_left + size + PAD
  canvas = Image.new('RGB', (width, height), BACKGROUND)
  draw = ImageDraw.Draw(canvas)
  font = ImageFont.load_default()
  draw.text((PAD, 1), 'query', fill=(0, 0, 0), font=font)
  _, left1, _ = cell_box(0, 1, side)
  header = f'{indices.shape[1]} nearest training images (cosine similarity of the features)'
  draw.text((left1, 1), _fit(draw, header, width - left1, font), fill=(0, 0, 0), font=font)
  for q in range(rows):
    query_label = None if query_labels is None else int(query_labels[q])
    cells = [(queries[q], query_label, GREY)]
    for j in indices[q]:
      label = None if bank_labels is None else int(bank_labels[j])
      cells.append((bank[j], label, _border_colour(query_label, label)))
    for col, (image, label, colour) in enumerate(cells):
      top, left, size = cell_box(q, col, side)
      draw.rectangle([left, top, left + size - 1, top + size - 1], fill=colour)
      canvas.paste(Image.fromarray(_resize(image, side)), (left + bw, top + bw))
      name = _fit(draw, class_name(-1 if label is None else label, class_names), size, font)
      text_colour = (0, 0, 0) if col == 0 or colour == GREY else colour
      draw.text((left, top + size + 1), name, fill=text_colour, font=font)
  return np.asarray(canvas, np.uint8)


# ------------------------------------------------------------------------------------- maps

def pca_2d(features: np.ndarray) -> np.ndarray:
  """`[N, 2]`: the centred features projected on their first two principal axes (SVD).

  Each axis's sign is fixed so that its largest-magnitude coefficient is positive; with fewer
  than two axes of variance the missing coordinates are 0.
  """
  x = np.asarray(features, np.float64)
  if x.ndim != 2:
    raise ValueError(f'pca_2d: features must be [N, F], got {x.shape}')
  x = x - x.mean(axis=0, keepdims=True)
  _, _, vt = np.linalg.svd(x, full_matrices=False)
  axes = vt[:2]
  axes = axes * np.where(axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)] < 0,
                         -1.0, 1.0)[:, None]
  coords = x @ axes.T
  return np.pad(coords, ((0, 0), (0, 2 - coords.shape[1])))


def explained_variance(features: np.ndarray, coords: np.ndarray) -> np.ndarray:
  """The fraction of the features' total variance along each column of `coords` ([2])."""
  total = np.asarray(features, np.float64).var(axis=0).sum()
  return np.asarray(coords, np.float64).var(axis=0) / max(total, 1e-30)


UMAP_MIN_POINTS = 16  # UMAP's default neighbourhood (15) needs more points than this


def umap_2d(features: np.ndarray, seed: int = 0) -> Optional[np.ndarray]:
  """`[N, 2]` UMAP coordinates of `features`, or None when umap-learn is not installed."""
  try:
    import umap  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  # On L2-normalized features the Euclidean neighbours are the cosine ones.
  reducer = umap.UMAP(n_components=2, n_neighbors=15, random_state=seed)
  return np.asarray(reducer.fit_transform(np.asarray(features, np.float32)), np.float64)


def _colours(num: int):
  import matplotlib  # pylint: disable=g-import-not-at-top
  cmap = matplotlib.colormaps['tab10' if num <= 10 else 'tab20' if num <= 20 else 'turbo']
  return [cmap(i if num <= 20 else i / max(num - 1, 1)) for i in range(num)]


def map_figure(coords: np.ndarray, labels: np.ndarray,
               class_names: Optional[Sequence[str]] = None, title: str = '',
               axis_names: Sequence[str] = ('', '')):
  """A matplotlib figure: `coords` `[N, 2]` scattered, one colour per label (grey for -1), with
  a legend of class names when there are at most 20 classes."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  coords, labels = np.asarray(coords), np.asarray(labels)
  classes = np.unique(labels[labels >= 0])
  fig, ax = plt.subplots(figsize=(7.5, 6))
  size = 4 if len(labels) > 2000 else 12
  if np.any(labels < 0):
    m = labels < 0
    ax.scatter(coords[m, 0], coords[m, 1], s=size, color=GREY_FLOAT, linewidths=0,
               label='unlabelled')
  for c, colour in zip(classes, _colours(classes.size)):
    m = labels == c
    ax.scatter(coords[m, 0], coords[m, 1], s=size, color=colour, alpha=0.8, linewidths=0,
               label=class_name(c, class_names))
  if 0 < classes.size <= 20 or (classes.size == 0 and np.any(labels < 0)):
    ax.legend(loc='center left', bbox_to_anchor=(1.0, 0.5), fontsize='small', markerscale=2.5,
              frameon=False)
  ax.set_xlabel(axis_names[0])
  ax.set_ylabel(axis_names[1])
  ax.set_xticks([])
  ax.set_yticks([])
  ax.set_title(title, fontsize=10)
  fig.tight_layout()
  return fig



# ----------------------------------------------------------------------------------- writing

def _write_bytes(path: str, data: bytes) -> str:
  from etils import epath  # pylint: disable=g-import-not-at-top (local or gs:// workdirs)
  out = epath.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_bytes(data)
  return os.fspath(out)


def write_png(image: np.ndarray, path: str) -> str:
  """Writes an RGB uint8 `[H, W, 3]` array as a PNG; returns the path."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  Image.fromarray(np.asarray(image, np.uint8)).save(buf, format='PNG')
  return _write_bytes(path, buf.getvalue())


def write_figure(fig, path: str) -> str:
  """Writes a matplotlib figure as a PNG and closes it; returns the path."""
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=100)
  plt.close(fig)
  return _write_bytes(path, buf.getvalue())


def read_images(data_cfg, indices: Iterable[int], *, train: bool) -> np.ndarray:
  """uint8 `[n, S, S, 3]`: the examples `indices` of the train (or eval) split, resized and
  centre-cropped to `data.image_size` as `eval_iterator(raw=True)` gives them; only these are
  read."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jssl.data import pipeline  # pylint: disable=g-import-not-at-top
  src = pipeline.open_source(data_cfg, train=train)
  images = []
  for i in indices:
    i = tf.constant(int(i), tf.int64)
    record, _ = src.read(i)
    images.append(pipeline.resize_center_crop(src.decode(record, i), data_cfg.image_size).numpy())
  size = data_cfg.image_size
  return np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)


def neighbours_picture(data_cfg, train: SplitFeatures, evals: SplitFeatures, *,
                       class_names: Optional[Sequence[str]] = None, num_queries: int = 8,
                       k: int = 8, read: Callable = read_images) -> np.ndarray:
  """`neighbour_grid` of `num_queries` eval rows (`pick_queries`) and their `k` nearest
  training rows, reading only those images (`read(data_cfg, dataset_indices, train=...)`)."""
  rows = pick_queries(evals.labels, num_queries)
  found = nearest(evals.features[rows], train.features, k)
  bank_rows, inverse = np.unique(found, return_inverse=True)
  labelled = bool(np.all(evals.labels[rows] >= 0))
  return neighbour_grid(
      read(data_cfg, evals.index[rows], train=False),
      evals.labels[rows] if labelled else None,
      read(data_cfg, train.index[bank_rows], train=True),
      train.labels[bank_rows] if labelled else None,
      inverse.reshape(found.shape), class_names)


def write_maps(workdir: str, evals: SplitFeatures, *,
               class_names: Optional[Sequence[str]] = None, max_points: int = 5000,
               title: str = '', log: Optional[Callable[[str], None]] = None) -> list[str]:
  """Writes workdir/map_pca.png (and map_umap.png when umap-learn is installed) of at most
  `max_points` L2-normalized eval features spread over the split; returns the paths."""
  rows = spread(len(evals.labels), max_points)
  feats, labels = l2_normalize(evals.features[rows]), evals.labels[rows]
  coords = pca_2d(feats)
  ratio = explained_variance(feats, coords)
  head = f'{title}: ' if title else ''
  paths = [write_figure(map_figure(
      coords, labels, class_names, f'{head}PCA of {len(rows)} eval features',
      (f'PC 1 ({100 * ratio[0]:.1f}% of the variance)',
       f'PC 2 ({100 * ratio[1]:.1f}% of the variance)')),
      os.path.join(workdir, 'map_pca.png'))]
  too_few = len(rows) < UMAP_MIN_POINTS
  embedded = None if too_few else umap_2d(feats)
  if embedded is None:
    if log is not None:
      why = (f'only {len(rows)} points' if too_few
             else 'umap-learn is not installed (pip install umap-learn)')
      log(f'map_umap.png skipped: {why}')
    return paths
  paths.append(write_figure(map_figure(
      embedded, labels, class_names, f'{head}UMAP of {len(rows)} eval features',
      ('UMAP 1', 'UMAP 2')), os.path.join(workdir, 'map_umap.png')))
  return paths


def write_pictures(workdir: str, data_cfg, train: SplitFeatures, evals: SplitFeatures, *,
                   class_names: Optional[Sequence[str]] = None, num_queries: int = 8, k: int = 8,
                   max_points: int = 5000, title: str = '',
                   log: Optional[Callable[[str], None]] = None) -> list[str]:
  """Writes workdir/neighbours.png, map_pca.png (and map_umap.png); returns the paths."""
  paths = [write_png(neighbours_picture(data_cfg, train, evals, class_names=class_names,
                                        num_queries=num_queries, k=k),
                     os.path.join(workdir, 'neighbours.png'))]
  return paths + write_maps(workdir, evals, class_names=class_names, max_points=max_points,
                            title=title, log=log)


class RecordIndex:
  """Batches passed through unchanged, recording the dataset `index` of every valid row: the
  rows, in order, that `features.extract_features` keeps when it reads every batch."""

  def __init__(self, batches: Iterable[Mapping]):
    self.batches, self.parts = batches, []

  def __len__(self):
    return len(self.batches)

  def __iter__(self):
    from jssl.eval import features  # pylint: disable=g-import-not-at-top
    self.parts = []
    for batch in self.batches:
      index = features.to_host(batch['index']).astype(np.int64)
      valid = (np.ones(index.shape, bool) if batch.get('valid') is None
               else features.to_host(batch['valid']).astype(bool))
      self.parts.append(index[valid])
      yield batch

  @property
  def index(self) -> np.ndarray:
    return np.concatenate(self.parts) if self.parts else np.zeros((0,), np.int64)
