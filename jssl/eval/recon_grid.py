"""Pictures of masked image modeling: a PNG grid of original / masked / reconstructed images.

A method may define the hook
    `recon_images(params, batch_stats, method_state, images, rng) -> {column title: [N, H, W, 3]}`
(images in [0, 1]; the columns are drawn in the order of the method's `recon_columns`
attribute, if any; MAE and SimMIM: original / masked / reconstruction / recon + visible; the dVAE:
original / reconstruction; BEiT: original / masked / tokenizer / beit). The trainer calls
`write_for_state` at each evaluation: `num_images` images spread over the eval split (through
the eval recipe) go through the hook with a fixed rng (the same masks every time, so the pictures
of successive evaluations compare), and `write_grid` draws one row per image, one column per
entry, into `workdir/recon_<step>.png` and `workdir/recon.png` (the latest).
"""

import functools
import io
import os
from typing import Mapping, Optional

import jax
import numpy as np

_IMAGES = {}


def write_grid(columns: Mapping[str, np.ndarray], path: str, title: Optional[str] = None) -> str:
  """Writes a rows = images x columns = entries PNG of `columns` (each `[N, H, W, 3]` in [0, 1])."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = list(columns)
  if not names:
    raise ValueError('write_grid: no images')
  arrays = [np.clip(np.asarray(columns[k], np.float32), 0.0, 1.0) for k in names]
  rows = arrays[0].shape[0]
  for name, a in zip(names, arrays):
    if a.ndim != 4 or a.shape[0] != rows or a.shape[-1] != 3:
      raise ValueError(f'write_grid: column {name!r} must be [{rows}, H, W, 3], got {a.shape}')
  fig, axes = plt.subplots(rows, len(names), figsize=(1.6 * len(names), 1.6 * rows + 0.4),
                           squeeze=False)
  for j, (name, a) in enumerate(zip(names, arrays)):
    for i in range(rows):
      ax = axes[i][j]
      ax.imshow(a[i], interpolation='nearest')
      ax.set_xticks([])
      ax.set_yticks([])
      if i == 0:
        ax.set_title(name, fontsize=9)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  buf = io.BytesIO()
  fig.savefig(buf, format='png', dpi=100)
  plt.close(fig)
  from etils import epath  # pylint: disable=g-import-not-at-top (local or gs:// workdirs)
  out = epath.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_bytes(buf.getvalue())
  return os.fspath(out)


@functools.lru_cache(maxsize=4)
def _jitted(method):
  return jax.jit(method.recon_images)


def _local(tree):
  """A host copy of a (replicated) pytree: each array's first local shard."""
  def one(a):
    if isinstance(a, jax.Array):
      return np.asarray(a.addressable_data(0))
    return np.asarray(a)
  return jax.tree.map(one, tree)


def eval_images(data_cfg, num_images: int) -> np.ndarray:
  """`num_images` images spread evenly over the eval split (class-ordered folders give one of
  each class), through the eval recipe; cached."""
  key = (data_cfg.to_json_best_effort(), num_images)
  if key not in _IMAGES:
    from jssl.data import pipeline  # pylint: disable=g-import-not-at-top (TensorFlow)
    src = pipeline.open_source(data_cfg, train=False)
    recipe = pipeline.eval_recipe(data_cfg)
    views = []
    for i in np.linspace(0, src.num_examples - 1, num_images).astype(np.int64):
      record, _ = src.read(i)
      views.append(recipe(src.decode(record, i), pipeline.example_seed(0, 0, i))['view_0'])
    _IMAGES[key] = np.stack([np.asarray(v, np.float32) for v in views])
  return _IMAGES[key]


def reconstruct(method, params, batch_stats, method_state, images, seed: int = 0) -> dict:
  """The method's picture columns as numpy arrays (run on this process's first device)."""
  out = jax.device_get(_jitted(method)(_local(params), _local(batch_stats), _local(method_state),
                                       np.asarray(images, np.float32), jax.random.PRNGKey(seed)))
  order = [k for k in getattr(method, 'recon_columns', ()) if k in out]
  order += sorted(k for k in out if k not in order)  # jit returns dicts key-sorted
  return {k: np.asarray(out[k]) for k in order}


def write_for_state(method, state, config, workdir: str, step: int, log=None,
                    num_images: int = 8) -> Optional[str]:
  """Writes workdir/recon_<step>.png (and recon.png) when `method` has `recon_images`."""
  if not hasattr(method, 'recon_images'):
    return None
  images = eval_images(config.data, num_images)
  columns = reconstruct(method, state.params, state.batch_stats, state.method_state, images)
  path = write_grid(columns, os.path.join(workdir, f'recon_{int(step):06d}.png'),
                    f'{method.name}, step {int(step)}')
  from etils import epath  # pylint: disable=g-import-not-at-top
  epath.Path(workdir, 'recon.png').write_bytes(epath.Path(path).read_bytes())
  if log is not None:
    log(f'step {int(step)}: wrote {path}')
  return path
