"""optim.weight_decay_schedule (DINO's cosine weight decay) reaches every optimizer of optim.build:
the update at step t equals a float64 reference of that optimizer with the decay wd(t)."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jssl.train import optim

TOTAL, LR = 20, 0.1


def test_schedule_is_dinos_cosine():
  assert optim.weight_decay_schedule(0.04, None, 10) == 0.04
  assert optim.weight_decay_schedule(1e-6, 1e-6, 10) == 1e-6
  wd = optim.weight_decay_schedule(0.04, 0.4, 100)
  # DINO's utils.cosine_scheduler(0.04, 0.4, epochs, niter_per_ep) over 100 iterations
  want = 0.4 + 0.5 * (0.04 - 0.4) * (1 + np.cos(np.pi * np.arange(100) / 100))
  np.testing.assert_allclose([wd(k) for k in range(100)], want, rtol=1e-5)
  np.testing.assert_allclose([wd(100), wd(500)], [0.4, 0.4], rtol=1e-6)


def _cfg(name, **kw):
  c = ml_collections.ConfigDict(dict(
      name=name, lr=LR, lr_scaling='none', weight_decay=0.04, weight_decay_end=0.4,
      momentum=0.0, nesterov=False, trust_coefficient=0.02, trust_clip=False,
      warmup_epochs=0.0, schedule='constant', end_lr_factor=0.0, clip_norm=0.0, b1=0.9,
      b2=0.999, eps=1e-6))
  c.update(kw)
  return c


def _reference(name, g, w, wd, trust_clip=False, eta=0.02, eps=1e-6):
  """The update of one step at decay `wd`, float64 (no momentum; Adam's moments of a constant
  gradient are, bias-corrected, g and g^2)."""
  g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
  if name == 'sgd':
    return -LR * (g + wd * w)
  if name == 'lars':
    u = g + wd * w
    ratio = eta * np.linalg.norm(w) / np.linalg.norm(u)
    return -LR * (min(ratio / LR, 1.0) * u if trust_clip else ratio * u)
  adam = g / (np.abs(g) + eps)
  if name == 'adamw':
    return -LR * (adam + wd * w)
  r = adam + wd * w  # lamb
  return -LR * np.linalg.norm(w) / np.linalg.norm(r) * r


@pytest.mark.parametrize('name,clip', [('sgd', False), ('lars', False), ('lars', True),
                                       ('adamw', False), ('lamb', False)])
def test_decay_applied_at_step_t_follows_the_schedule(name, clip):
  tx, _ = optim.build(_cfg(name, trust_clip=clip), 256, TOTAL, 0)
  wd = optim.weight_decay_schedule(0.04, 0.4, TOTAL)
  w = jnp.linspace(-1.0, 2.0, 12).reshape(3, 4)
  g = jnp.linspace(0.5, -0.3, 12).reshape(3, 4)
  params, grads = {'kernel': w}, {'kernel': g}
  state = tx.init(params)
  for t in range(TOTAL + 2):
    updates, state = tx.update(grads, state, params)
    if t in (0, 7, TOTAL // 2, TOTAL + 1):
      np.testing.assert_allclose(updates['kernel'], _reference(name, g, w, float(wd(t)), clip),
                                 rtol=2e-4, atol=1e-7, err_msg=f'{name} step {t}')


def test_constant_decay_without_weight_decay_end():
  tx, _ = optim.build(_cfg('sgd', weight_decay_end=None), 256, TOTAL, 0)
  w, g = jnp.ones((2, 2)), jnp.zeros((2, 2))
  state = tx.init({'kernel': w})
  for _ in range(5):
    updates, state = tx.update({'kernel': g}, state, {'kernel': w})
  np.testing.assert_allclose(updates['kernel'], -LR * 0.04 * np.ones((2, 2)), rtol=1e-6)
