"""SimCLR and BYOL behind the method interface: shapes, losses, EMA target, registry."""

import functools
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses, methods
from jssl.methods import base

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(method: str):
  spec = importlib.util.spec_from_file_location(f'cfg_{method}',
                                                os.path.join(ROOT, 'configs', f'{method}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.model.update(width=4, stage_sizes=(1,))
  c.method.update(proj_hidden_dims=(16,), proj_dim=8)
  if method == 'byol':
    c.method.update(pred_hidden_dims=(16,))
  c.data.augment.image_size = 8
  return c


@functools.lru_cache(maxsize=None)
def _built(name):
  method = methods.build(tiny_config(name), 50)
  rng = np.random.default_rng(0)
  batch = {k: jnp.asarray(rng.random((6,) + tuple(s), dtype=np.float32))
           for k, (s, _) in method.input_spec().items()}
  return method, batch, jax.jit(method.init)(jax.random.PRNGKey(0), batch)


@pytest.mark.parametrize('name,cls', [('simclr', methods.SimCLR), ('byol', methods.BYOL)])
def test_build_and_input_spec(name, cls):
  method = methods.build(tiny_config(name), 50)
  assert isinstance(method, cls) and isinstance(method, base.Method) and method.name == name
  assert method.input_spec() == {'view_0': ((8, 8, 3), jnp.float32),
                                 'view_1': ((8, 8, 3), jnp.float32)}
  config = tiny_config(name)
  config.method.name = 'no_such_method'
  with pytest.raises(ValueError, match="config.method.name 'no_such_method'"):
    methods.build(config, 50)


def test_simclr_loss_is_nt_xent_of_the_projections():
  method, batch, (params, stats, state) = _built('simclr')
  assert state == {}

  def both(params):
    loss, (new_stats, new_state, metrics) = method.loss_fn(params, stats, state, batch, None, 0)
    x = method.normalize(jnp.concatenate([batch['view_0'], batch['view_1']]))
    (_, z, _), _ = method.model.apply({'params': params, 'batch_stats': stats}, x, train=True,
                                      mutable=['batch_stats'])
    z1, z2 = jnp.split(z, 2)
    return loss, losses.nt_xent(z1, z2, temperature=method.temperature), new_stats, metrics

  loss, want, new_stats, metrics = jax.jit(both)(params)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  np.testing.assert_allclose(metrics['loss'], loss)
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats, new_stats)
  assert all(jax.tree.leaves(changed))  # batch statistics were updated
  feats = jax.jit(method.features)(params, stats, batch['view_0'])
  assert feats.shape == (6, 4)


def test_byol_loss_target_and_ema():
  method, batch, (params, stats, state) = _built('byol')
  assert set(state) == {'target_params', 'target_batch_stats'}
  jax.tree.map(np.testing.assert_array_equal, state['target_params'],
               {k: params[k] for k in ('backbone', 'projector')})

  def run(params, state):
    (loss, (_, new_state, metrics)), grads = jax.value_and_grad(
        method.loss_fn, has_aux=True)(params, stats, state, batch, None, 0)
    x = method.normalize(jnp.concatenate([batch['view_0'], batch['view_1']]))
    (_, _, p), _ = method.online.apply({'params': params, 'batch_stats': stats}, x,
                                       train=True, mutable=['batch_stats'])
    (_, zt, _), _ = method.target.apply({'params': state['target_params'],
                                         'batch_stats': state['target_batch_stats']}, x,
                                        train=True, mutable=['batch_stats'])
    p1, p2 = jnp.split(p, 2)
    z1, z2 = jnp.split(zt, 2)
    want = losses.byol_loss(p1, z2) + losses.byol_loss(p2, z1)
    moved = jax.tree.map(lambda p: p + 1.0, params)
    _, after = method.update_state(params, moved, new_state, 10)
    return loss, want, metrics, grads, after

  loss, want, metrics, grads, after = jax.jit(run)(params, state)
  np.testing.assert_allclose(loss, want, rtol=1e-6)
  assert set(grads) == {'backbone', 'projector', 'predictor'}
  base = method.tau_base
  assert base == 0.98  # the tiny preset's
  tau = 1 - (1 - base) * (np.cos(np.pi * 10 / 50) + 1) / 2
  np.testing.assert_allclose(float(metrics['tau']), base, rtol=1e-7)
  jax.tree.map(lambda t, o: np.testing.assert_allclose(t, tau * o + (1 - tau) * (o + 1.0),
                                                       rtol=1e-6, atol=1e-6),
               after['target_params'], state['target_params'])
  feats = jax.jit(method.features)(params, stats, batch['view_0'])
  assert feats.shape == (6, 4)


def test_normalize_uses_the_config_mean_and_std():
  config = tiny_config('simclr')
  config.model.mean, config.model.std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
  method = methods.build(config, 10)
  np.testing.assert_allclose(method.normalize(jnp.ones((1, 2, 2, 3))), 2.0)
