"""Resume is exact for every kind of state: stopped at step k and resumed, a run ends with the
same whole TrainState (params, batch_stats, method_state, opt_state, rng) as an uninterrupted
one, bitwise: BYOL (EMA target), MoCo v2 (queue, shuffled-BN rng), DINO (centre, teacher
temperature), SwAV with its queue, MAE (masks drawn from the rng) and SimCLR with the on-device
photometric augmentation."""

import importlib.util
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jssl.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = jax.devices()[:1]


def _config(name):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}',
                                                os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config('tiny')


def shrunk(name, on_device=False):
  """The method's tiny preset on 64 synthetic 12 px images, 8 px views, batch 16 (4 steps per
  epoch), 6 steps, a checkpoint every 2, no evaluation, the smallest networks."""
  c = _config(name)
  if name == 'mae':
    c.model.update(width=16, depth=1, num_heads=2, patch_size=4)
    c.method.update(decoder_width=8, decoder_depth=1, decoder_num_heads=2)
  else:
    c.model.update(width=4, stage_sizes=(1,))
  m = c.method
  for key, value in dict(proj_hidden_dims=(16,), proj_dim=8, pred_hidden_dims=(16,),
                         queue_size=32, out_dim=16, hidden_dim=16, bottleneck_dim=8,
                         n_prototypes=16, queue_length=32, queue_start_epoch=0.0,
                         warmup_teacher_temp_epochs=1, bn_groups=2).items():
    if key in m:
      m[key] = value
  c.data.update(source='synthetic', eval_source='synthetic', image_size=8,
                on_device_photometric=on_device)
  c.data.synthetic.update(image_size=12, num_examples=64, num_classes=4)
  if 'n_global' in c.data.augment:
    c.data.augment.update(global_size=8, local_size=4)
  else:
    c.data.augment.image_size = 8
  c.data.eval_augment.image_size = 8
  c.batch_size, c.total_steps = 16, 6
  c.checkpoint.update(every_steps=2, keep=10, use_async=False)
  c.log.update(every_steps=1, tensorboard=False)
  c.eval.update(every_epochs=0, at_start=False, final=False, collapse_every_steps=0)
  return c


def _saved(workdir, step):
  return ocp.StandardCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', str(step), 'default'))


@pytest.mark.parametrize('name,on_device', [
    ('byol', False), ('swav', False),
    pytest.param('moco_v2', False, marks=pytest.mark.slow),
    pytest.param('dino', False, marks=pytest.mark.slow),
    pytest.param('mae', False, marks=pytest.mark.slow),
    pytest.param('simclr', True, marks=pytest.mark.slow)])
def test_stop_at_k_and_resume_equals_the_uninterrupted_run_bitwise(tmp_path, name, on_device):
  config = shrunk(name, on_device)
  straight, broken = str(tmp_path / 'straight'), str(tmp_path / 'broken')
  assert loop.train(config, straight, devices=DEVICES, log=lambda s: None)['step'] == 6
  assert loop.train(config, broken, devices=DEVICES, stop_after_step=3,
                    log=lambda s: None)['step'] == 3  # killed after 3: the newest save is 2
  assert loop.train(config, broken, devices=DEVICES, log=lambda s: None)['step'] == 6
  a, b = _saved(straight, 6), _saved(broken, 6)
  assert sorted(a) == ['batch_stats', 'method_state', 'opt_state', 'params', 'rng', 'step']
  jax.tree.map(np.testing.assert_array_equal, a, b)
  moved = [float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a['params']),
                                                      jax.tree.leaves(_saved(straight, 2)['params']))]
  assert max(moved) > 0  # the steps after the resume point did change the parameters
  if jax.tree.leaves(a['method_state']):
    before = jax.tree.leaves(_saved(straight, 2)['method_state'])
    assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a['method_state']),
                                                          before))
