"""Shared body of the methods' slow tiny-run tests: train, then compare with random init."""

import jax
import numpy as np

from jssl import methods
from jssl.train import optim, sharding
from jssl.train import state as state_lib
from jssl.train import step as step_lib


def assert_learns_without_collapse(config, tmp_path, epochs: int = 2) -> dict:
  """Trains `config` (its tiny preset) for `epochs` on one device, then asserts that the
  normalized features keep a per-dimension std well above 0 (no collapse) and that the kNN
  top-1 beats the same network at random initialization by 2 points. Returns the result."""
  from jssl.data import pipeline  # pylint: disable=g-import-not-at-top (TensorFlow)
  from jssl.train import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from jssl.train import loop  # pylint: disable=g-import-not-at-top
  config.total_epochs = epochs
  config.eval.every_epochs = 0
  config.eval.linear_probe = False
  config.log.tensorboard = False
  config.checkpoint.use_async = False
  devices = jax.devices()[:1]
  mesh = sharding.make_mesh(devices)
  result = loop.train(config, str(tmp_path), devices=devices, log=lambda s: None)
  assert np.isfinite(result['loss'])
  method = methods.build(config, result['step'])
  tx, _ = optim.build(config.optim, config.batch_size, result['step'], 1)
  fresh = state_lib.create(method, tx, config.seed + 1, sharding.replicated(mesh))
  features = step_lib.make_features_fn(method, mesh)
  random_init = loop.evaluate(config, features, fresh, mesh, 10, final=False)
  trained = checkpoint_lib.Checkpointer(str(tmp_path / 'checkpoints')).restore(fresh)
  feats, _ = loop.extract(features, trained, pipeline.eval_iterator(config.data, 256), mesh)
  feats /= np.linalg.norm(feats, axis=1, keepdims=True)
  assert feats.std(axis=0).mean() > 0.01
  assert result['knn_top1'] > random_init['knn_top1'] + 0.02, (result, random_init)
  return result
