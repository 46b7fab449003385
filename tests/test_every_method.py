"""Every registered method, from its tiny preset, with no per-method list to keep in sync:
build, init, 3 jitted steps on 8 devices; the loss is finite and changes; the method state
changes where there is one; features have the right shape; the checkpoint round-trips."""

import importlib.util
import pathlib

import jax
import numpy as np
import pytest

from jssl import methods
from jssl.train import checkpoint, param_groups, sharding
from jssl.train import state as state_lib
from jssl.train import step as step_lib

ROOT = pathlib.Path(__file__).resolve().parents[1]
BATCH = 16


def tiny_config(name):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}', ROOT / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config('tiny')
  c.batch_size = BATCH
  return c


def inputs_for(config) -> dict:
  """What a method takes from other runs: BEiT gets a freshly initialized tiny dVAE tokenizer
  (its training is tested in test_methods_beit_dvae)."""
  if config.method.name != 'beit':
    return {}
  dvae = methods.build(tiny_config('dvae'), 10)
  params, _, _ = dvae.init(jax.random.PRNGKey(1), state_lib.sample_batch(dvae))
  return {'tokenizer': (dvae, jax.tree.map(np.asarray, params))}


def batch_for(method, seed):
  from jssl.data import feeding  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  batch = {}
  for k, (shape, dtype) in method.input_spec().items():
    if np.issubdtype(np.dtype(dtype), np.integer):  # masks: a random half of the patches
      batch[k] = (rng.random((BATCH,) + tuple(shape)) < 0.5).astype(dtype)
    else:
      batch[k] = rng.random((BATCH,) + tuple(shape)).astype(dtype)
  return batch, feeding


def _changed(a, b) -> bool:
  return any(not np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.mark.parametrize('name', sorted(methods.REGISTRY))
def test_every_registered_method_trains_and_round_trips(name, tmp_path):
  config = tiny_config(name)
  total = 100
  method = methods.build(config, total, 10, **inputs_for(config))
  assert method.name == name
  mesh = sharding.make_mesh(jax.devices()[:8])
  tx, schedule = param_groups.build(config.optim, BATCH, total, 2,
                                    getattr(method, 'optim_groups', tuple)())
  init = state_lib.init_fn(method, tx, sharding.replicated(mesh))  # compiled once, used twice
  state = init(np.uint32(0))
  initial_state = jax.device_get(state.method_state)
  train_step = step_lib.make_train_step(method, tx, mesh, schedule)
  losses = []
  for k in range(3):
    host, feeding = batch_for(method, k)
    state, metrics = train_step(state, feeding.global_batch(host, mesh))
    losses.append(float(metrics['loss']))
    assert float(metrics['finite']) == 1.0, (name, k, metrics)
  assert np.all(np.isfinite(losses)) and len(set(losses)) > 1, (name, losses)
  assert int(state.step) == 3
  if jax.tree.leaves(initial_state):
    frozen = getattr(method, 'frozen_method_state', False)  # BEiT's frozen tokenizer
    assert _changed(initial_state, state.method_state) != frozen, f'{name}: method_state'
  host, feeding = batch_for(method, 9)
  feats = step_lib.make_features_fn(method, mesh)(state.params, state.batch_stats,
                                                  feeding.global_batch(host, mesh)['view_0'])
  assert feats.ndim == 2 and feats.shape[0] == BATCH and np.all(np.isfinite(feats))
  ckpt = checkpoint.Checkpointer(str(tmp_path / 'ckpt'), use_async=False)
  ckpt.save(state, force=True)
  fresh = init(np.uint32(1))
  restored = ckpt.restore(fresh)
  ckpt.close()
  jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))
