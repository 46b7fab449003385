"""Reading a training run's folder (workdir/config.json and workdir/checkpoints/), in one place.

- `read_config(workdir, what)`: the run's ConfigDict (JSON lists back to tuples).
- `restore_arrays(workdir, step=None, what)`: `{'step', 'params', 'batch_stats',
  'method_state'}` of its newest (or `step`'s) checkpoint as numpy arrays, restored without a
  target (any method, any device layout).
- `restore_state(config, workdir, step, mesh)`: `(method, restored TrainState, fresh TrainState)`
  with the structure and shardings of the run's own engine (evaluation).
- `method_inputs(config)`: what a method's builder needs from other runs (BEiT: its trained dVAE
  tokenizer, read from `config.method.tokenizer_workdir`); `build_method(config, total_steps,
  steps_per_epoch)` = `methods.build(...)` with those inputs. Every entry point builds methods
  through it.
`what` names the config key or flag the workdir came from, for the error messages.
"""

import json
import os

import jax
import ml_collections
import numpy as np
from etils import epath

from jssl import methods
from jssl.train import checkpoint as checkpoint_lib

TOKENIZER_KEY = 'config.method.tokenizer_workdir'


def _tuples(x):
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  if isinstance(x, list):
    return tuple(_tuples(v) for v in x)
  return x


def _path(workdir: str) -> str:
  return workdir if '://' in workdir else os.path.abspath(workdir)


def read_config(workdir: str, what: str = '--workdir') -> ml_collections.ConfigDict:
  """The ConfigDict of the run in `workdir` (its config.json, written by jssl.main)."""
  path = epath.Path(_path(workdir), 'config.json')
  if not path.is_file():
    raise FileNotFoundError(f'{what}={workdir!r}: no config.json there (not a jssl.main run '
                            'folder)')
  return ml_collections.ConfigDict(_tuples(json.loads(path.read_text())))


def restore_arrays(workdir: str, step=None, what: str = '--workdir') -> dict:
  """`{'step', 'params', 'batch_stats', 'method_state'}` of a checkpoint, as numpy arrays."""
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = os.path.join(_path(workdir), 'checkpoints')
  if not epath.Path(directory).is_dir():
    raise FileNotFoundError(f'{what}={workdir!r}: no checkpoints/ folder there')
  ckpt = checkpoint_lib.Checkpointer(directory, use_async=False)
  try:
    step = step or ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f'{what}={workdir!r}: no complete checkpoint in {directory}')
    restored = ckpt.manager.restore(step, args=ocp.args.StandardRestore(
        fallback_sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0])))
  finally:
    ckpt.close()
  out = {k: jax.tree.map(lambda a: np.asarray(jax.device_get(a)), restored.get(k, {}))
         for k in ('params', 'batch_stats', 'method_state')}
  out['step'] = int(np.asarray(jax.device_get(restored['step'])))
  return out


def load_tokenizer(workdir: str):
  """`(DVAETokenizer, float32 numpy params)` of the dVAE run in `workdir`."""
  from jssl.methods import dvae  # pylint: disable=g-import-not-at-top
  if not workdir:
    raise ValueError(
        f'BEiT cannot start without its tokenizer: {TOKENIZER_KEY} is empty; train the dVAE '
        'first (python -m jssl.main --config configs/dvae.py --workdir runs/dvae-tiny) and pass '
        f'--{TOKENIZER_KEY}=runs/dvae-tiny')
  path = _path(workdir)
  if not (epath.Path(path, 'config.json').is_file()
          and epath.Path(path, 'checkpoints').is_dir()):
    raise FileNotFoundError(
        f'BEiT cannot start: {TOKENIZER_KEY}={workdir!r} is not a dVAE run (no config.json or '
        f'checkpoints/ in {path}); train the tokenizer first: python -m jssl.main --config '
        f'configs/dvae.py:PRESET --workdir {workdir}')
  cfg = read_config(workdir, TOKENIZER_KEY)
  if cfg.method.name != 'dvae':
    raise ValueError(f'BEiT cannot start: {TOKENIZER_KEY}={workdir!r} is a '
                     f'{cfg.method.name!r} run, not a dvae run')
  tokenizer = dvae.from_config(cfg, max(int(cfg.get('total_steps', 0) or 0), 1))
  try:
    arrays = restore_arrays(workdir, what=TOKENIZER_KEY)
  except FileNotFoundError as e:
    raise FileNotFoundError(f'BEiT cannot start: {e}; finish the dVAE run first') from None
  params = jax.tree.map(lambda a: np.asarray(a, np.float32), arrays['params'])
  want = jax.eval_shape(lambda: tokenizer.init(
      jax.random.PRNGKey(0), {'view_0': np.zeros((2, tokenizer.image_size,
                                                  tokenizer.image_size, 3), np.float32)})[0])
  if jax.tree.structure(want) != jax.tree.structure(params) or any(
      a.shape != b.shape for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(params))):
    raise ValueError(f'the checkpoint in {path}/checkpoints does not match the dVAE of its '
                     'config.json')
  return tokenizer, params


def method_inputs(config) -> dict:
  """The keyword inputs `methods.build` needs from other runs for this config."""
  if config.method.name == 'beit':
    return {'tokenizer': load_tokenizer(config.method.get('tokenizer_workdir', '') or '')}
  return {}


def build_method(config, total_steps: int, steps_per_epoch: int = 0):
  """`methods.build` with the inputs the method reads from other runs (`method_inputs`)."""
  return methods.build(config, total_steps, steps_per_epoch, **method_inputs(config))


def restore_state(config, workdir: str, step, mesh):
  """`(method, restored TrainState, freshly initialized TrainState)` of the run in `workdir`."""
  from jssl.train import param_groups, sharding, state  # pylint: disable=g-import-not-at-top
  total_steps = max(int(config.get('total_steps', 0) or 0), 1)
  method = build_method(config, total_steps)
  tx, _ = param_groups.build(config.optim, config.batch_size, total_steps, 0,
                             getattr(method, 'optim_groups', tuple)())
  fresh = state.create(method, tx, config.seed, out_sharding=sharding.replicated(mesh))
  ckpt = checkpoint_lib.Checkpointer(os.path.join(_path(workdir), 'checkpoints'),
                                     use_async=False)
  try:
    restored = ckpt.restore(fresh, step)
  finally:
    ckpt.close()
  return method, restored, fresh
