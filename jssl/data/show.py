"""Look at a run's (or a recipe's) views: a PNG grid, one row per source image, one column per view.

  python -m jssl.data.show --config configs/byol.py:cifar10 \
      --config.data.source=folder:DIR --out views.png [--n 8]
  python -m jssl.data.show --recipe byol --source embedded --n 8 --out views.png \
      [--seed 0] [--param image_size=96 --param blur_p=(1.0,0.5)] [--image a.jpg ...]

With `--config` (a file or a shipped name, with the same `--config.KEY=VALUE` overrides as
`python -m jssl.main`) it draws the views that run trains on: the first `--n` images of its
first epoch, from its training source, through its recipe (multi-crop, masks included) with its
seed: each view is a function of (seed, epoch, example), so these are the run's own views of
those examples. The on-device photometric half, when the config moves it there, is drawn with
a key of the seed (the run draws it from its step's key). `--recipe` is the shortcut that needs
no config.

Columns: the source image, then `view_0`, `view_1`, ...; for recipes with a mask a last column
shows `view_0` with the masked patches darkened. Sources: `--image PATH` (repeatable), the
embedded CIFAR-10 subset (`--source embedded`), or a synthetic image (`--source synthetic`,
the default). With `on_device=True` the photometric half runs through `augment_jax`, so the
grid always shows the whole recipe. `render_views` is the reusable core.
"""

import argparse
import ast
import sys
from typing import Sequence

import numpy as np

_BACKGROUND = 0.5
_MASK_SHADE = 0.3


def synthetic_image(size: int = 256, index: int = 0) -> np.ndarray:
  """A smooth, colourful uint8 [size, size, 3] test image (a disc on colour gradients)."""
  y, x = np.mgrid[0:size, 0:size] / (size - 1)
  phase = 0.7 * index
  r = 0.5 + 0.5 * np.sin(2 * np.pi * (x + phase))
  g = 0.5 + 0.5 * np.cos(2 * np.pi * (y * 1.5 - phase))
  b = x * y
  disc = ((x - 0.35) ** 2 + (y - 0.6) ** 2) < 0.04
  img = np.stack([r, g, b], -1)
  img[disc] = (0.95, 0.85, 0.1)
  return (img * 255).round().astype(np.uint8)


def _views(images, recipe, seed):
  """Per image, the recipe's outputs as numpy (host half, then the device half if any)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  outs = [{k: v.numpy() for k, v in recipe(tf.constant(img), tf.constant([seed, i], tf.int64))
           .items()} for i, img in enumerate(images)]
  if recipe.photometric_on_device:
    import jax  # pylint: disable=g-import-not-at-top
    from jssl.data import augment_jax  # pylint: disable=g-import-not-at-top
    batch = {k: np.stack([o[k] for o in outs]) for k in outs[0]}
    batch = augment_jax.photometric_fn(recipe.name, recipe.params)(batch, jax.random.key(seed))
    outs = [{k: np.asarray(v[i]) for k, v in batch.items()} for i in range(len(images))]
  return outs


def _cell(image: np.ndarray, size: int) -> np.ndarray:
  """float [h, w, 3] centred on a grey `size` square (shrunk by striding if larger)."""
  step = max(1, -(-max(image.shape[:2]) // size))
  image = image[::step, ::step]
  out = np.full((size, size, 3), _BACKGROUND, np.float32)
  top, left = (size - image.shape[0]) // 2, (size - image.shape[1]) // 2
  out[top:top + image.shape[0], left:left + image.shape[1]] = image
  return out


def _overlay(view: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """`view` with the patches where `mask` is 1 darkened."""
  rep = (view.shape[0] // mask.shape[0], view.shape[1] // mask.shape[1])
  full = np.kron(mask, np.ones(rep))[..., None]
  return view * (1 - (1 - _MASK_SHADE) * full)


def render_views(images: Sequence[np.ndarray], recipe, seed: int = 0) -> np.ndarray:
  """uint8 grid [rows * s, cols * s, 3]: row i shows image i and `recipe(image_i, [seed, i])`.

  Columns: the source, each view, and `view_0` under the mask for recipes with one. Cells are
  `s` = the largest view size, smaller views centred on grey.
  """
  return grid_of(images, _views(images, recipe, seed), recipe)


def column_names(recipe) -> list:
  names = ['source'] + [k for k in recipe.view_shapes if k != 'mask']
  return names + (['view_0 + mask'] if 'mask' in recipe.view_shapes else [])


def save_grid(grid: np.ndarray, columns: Sequence[str], path: str, title: str = '') -> None:
  """Writes `grid` as a PNG with column labels (matplotlib, Agg backend)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  scale = max(1, 96 // (grid.shape[1] // len(columns)))  # blow tiny (32 px) cells up
  grid = np.kron(grid, np.ones((scale, scale, 1), np.uint8))
  h, w = grid.shape[:2]
  fig = plt.figure(figsize=(w / 100, h / 100 + 0.5), dpi=100)
  ax = fig.add_axes((0, 0, 1, h / (h + 50)))
  ax.imshow(grid, interpolation='nearest')
  cell = w / len(columns)
  ax.set_xticks([cell * (i + 0.5) for i in range(len(columns))], columns, fontsize=8)
  ax.xaxis.tick_top()
  ax.set_yticks([])
  if title:
    fig.suptitle(title, fontsize=9, y=1.0, va='top')
  fig.savefig(path)
  plt.close(fig)


def _load_images(args):
  if args.image:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return [tf.io.decode_image(tf.io.read_file(p), channels=3, expand_animations=False).numpy()
            for p in args.image][:args.n]
  if args.source == 'embedded':
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from jssl.data import embedded  # pylint: disable=g-import-not-at-top
    blobs, _, _ = embedded.load_split('test')
    step = max(1, len(blobs) // args.n)  # spread over the classes
    return [tf.io.decode_jpeg(blobs[i * step], channels=3).numpy() for i in range(args.n)]
  return [synthetic_image(256, i) for i in range(args.n)]


def _parse_param(text: str):
  key, sep, value = text.partition('=')
  if not sep:
    raise argparse.ArgumentTypeError(f'--param wants key=value, got {text!r}')
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value


def run_views(config, n: int):
  """`(source images, per-image view dicts, recipe)` of the first `n` examples of a config's
  first training epoch, as its training pipeline makes them."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from jssl.data import pipeline  # pylint: disable=g-import-not-at-top
  data = config.data
  source = pipeline.open_source(data, train=True)
  recipe = pipeline.train_recipe(data)
  n = min(n, source.num_examples)
  batch = next(iter(pipeline.train_iterator(data, n, config.seed)))
  images = []
  for i in np.asarray(batch['index']):
    record, _ = source.read(tf.constant(int(i), tf.int64))
    images.append(source.decode(record, tf.constant(int(i), tf.int64)).numpy())
  outs = [{k: np.asarray(v[j]) for k, v in batch.items() if k.startswith('view_') or k == 'mask'}
          for j in range(n)]
  if recipe.photometric_on_device:
    import jax  # pylint: disable=g-import-not-at-top
    from jssl.data import augment_jax  # pylint: disable=g-import-not-at-top
    views = {k: np.stack([o[k] for o in outs]) for k in outs[0]}
    views = augment_jax.photometric_fn(recipe.name, recipe.params)(views,
                                                                   jax.random.key(config.seed))
    outs = [{k: np.asarray(v[j]) for k, v in views.items()} for j in range(n)]
  return images, outs, recipe


def grid_of(images, outs, recipe) -> np.ndarray:
  """The uint8 grid of `render_views` for views already made."""
  names = [k for k in recipe.view_shapes if k != 'mask']
  size = max(recipe.view_shapes[k][0] for k in names)
  rows = []
  for img, out in zip(images, outs):
    up = max(1, size // max(img.shape[:2]))
    cells = [_cell(np.kron(img.astype(np.float32) / 255, np.ones((up, up, 1))), size)]
    cells += [_cell(out[k], size) for k in names]
    if 'mask' in out:
      cells.append(_cell(_overlay(out['view_0'], out['mask']), size))
    rows.append(np.concatenate(cells, axis=1))
  return (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).round().astype(np.uint8)


def main_config(argv) -> int:
  """`--config` mode: the views of a run's config (absl flags, as jssl.main)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  from jssl import config_files  # pylint: disable=g-import-not-at-top
  try:
    argv = config_files.resolve_args(argv)
  except config_files.ConfigFileError as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  fv = flags.FlagValues()  # ml_collections finds the --config.KEY overrides in sys_argv
  config_flags.DEFINE_config_file('config', None, 'config file[:preset] or name', flag_values=fv,
                                  lock_config=True, sys_argv=['show'] + argv)
  flags.DEFINE_string('out', 'views.png', 'output PNG', flag_values=fv)
  flags.DEFINE_integer('n', 8, 'number of source images (rows)', flag_values=fv)
  try:
    fv(['show'] + argv)
  except (flags.Error, ValueError, KeyError, AttributeError, TypeError) as e:
    print(f'error: bad command line: {" ".join(str(e).split())}', file=sys.stderr)
    return 2
  config = fv.config
  try:
    images, outs, recipe = run_views(config, fv.n)
  except (FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  columns = column_names(recipe)
  save_grid(grid_of(images, outs, recipe), columns, fv.out,
            f'{config.method.name}:{config.get("preset", "")} views of {config.data.source} '
            f'(seed {config.seed})')
  print(f'wrote {fv.out}: {len(images)} images x {len(columns)} columns')
  return 0


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  if any(a == '--config' or a.startswith('--config=') for a in argv):
    return main_config(argv)
  parser = argparse.ArgumentParser(prog='python -m jssl.data.show', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--recipe', required=True, help='recipe name, e.g. simclr, byol, mae')
  parser.add_argument('--image', action='append', help='image file (repeatable)')
  parser.add_argument('--source', choices=('synthetic', 'embedded'), default='synthetic')
  parser.add_argument('--n', type=int, default=8, help='number of source images (rows)')
  parser.add_argument('--out', default='views.png')
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--param', action='append', type=_parse_param, default=[],
                      help='recipe parameter override key=value (repeatable)')
  args = parser.parse_args(argv)
  from jssl.data import augment  # pylint: disable=g-import-not-at-top
  try:
    recipe = augment.make_recipe(args.recipe, **dict(args.param))
  except ValueError as e:
    parser.error(str(e))
  images = _load_images(args)
  grid = render_views(images, recipe, args.seed)
  save_grid(grid, column_names(recipe), args.out, f'{args.recipe} (seed {args.seed})')
  print(f'wrote {args.out}: {len(images)} images x {len(column_names(recipe))} columns')
  return 0


if __name__ == '__main__':
  sys.exit(main())
