"""The loop's reliability: kill-and-resume == uninterrupted, SIGTERM saves, the NaN guard."""

import importlib.util
import os
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jssl.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = jax.devices()[:1]


def loop_config(**optim):
  """configs/simclr.py, shrunk: a 1-block ResNet, 8 px views of 64 synthetic images, batch 16
  (4 steps per epoch), 6 steps, a checkpoint every 2, no evaluation."""
  spec = importlib.util.spec_from_file_location('cfg_simclr',
                                                os.path.join(ROOT, 'configs', 'simclr.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.model.update(width=4, stage_sizes=(1,))
  c.method.update(proj_hidden_dims=(16,), proj_dim=8)
  c.data.update(source='synthetic', eval_source='synthetic', image_size=8)
  c.data.synthetic.update(image_size=12, num_examples=64, num_classes=4)
  c.data.augment.image_size = 8
  c.data.eval_augment.image_size = 8
  c.batch_size, c.total_steps = 16, 6
  c.checkpoint.update(every_steps=2, keep=10)
  c.log.update(every_steps=1, tensorboard=False)
  c.eval.update(every_epochs=0, final=False)
  c.optim.update(**optim)
  return c


def _saved(workdir, step):
  path = os.path.join(workdir, 'checkpoints', str(step), 'default')
  return ocp.StandardCheckpointer().restore(path)


def _steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir, 'checkpoints')) if d.isdigit())


def test_kill_sigterm_and_resume_equal_an_uninterrupted_run(tmp_path):
  config = loop_config()
  straight = str(tmp_path / 'straight')
  assert loop.train(config, straight, devices=DEVICES)['step'] == 6

  broken = str(tmp_path / 'broken')
  # 1. "killed" after step 3: no save at the kill, the newest checkpoint is step 2
  assert loop.train(config, broken, devices=DEVICES, stop_after_step=3)['step'] == 3
  assert _steps(broken) == [2]

  # 2. the same command resumes at 2; a SIGTERM after step 5 saves step 5 and returns
  lines = []

  def log(msg):
    lines.append(msg)
    if msg.startswith('step 5/'):
      os.kill(os.getpid(), signal.SIGTERM)

  result = loop.train(config, broken, devices=DEVICES, log=log)
  assert any(l.startswith('resumed from step 2') for l in lines), lines
  assert result['stopped'] == 'SIGTERM' and result['step'] == 5
  assert _steps(broken) == [2, 4, 5]
  assert signal.getsignal(signal.SIGTERM) is not None  # the handler was restored

  # 3. resumes at 5 and finishes
  assert loop.train(config, broken, devices=DEVICES)['step'] == 6
  a, b = _saved(straight, 6), _saved(broken, 6)
  assert int(a['step']) == int(b['step']) == 6
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6), a, b)
  moved = jax.tree.map(lambda x, y: float(np.abs(x - y).max()), a['params'],
                       _saved(straight, 2)['params'])
  assert max(jax.tree.leaves(moved)) > 1e-4
  records = [l for l in open(os.path.join(broken, 'metrics.jsonl')) if '"loss"' in l]
  assert len(records) >= 6
  assert os.path.exists(os.path.join(straight, 'curves.png'))


def test_non_finite_update_stops_with_the_last_good_checkpoint(tmp_path):
  # warm-up from 0: step 1 has lr 0 (finite, saved), step 2 has lr ~1e28 (parameters overflow)
  config = loop_config(name='sgd', lr=1e30, warmup_epochs=0.5)
  config.checkpoint.every_steps = 1
  workdir = str(tmp_path / 'nan')
  with pytest.raises(loop.NonFiniteError, match=r'non-finite .* at step 2') as err:
    loop.train(config, workdir, devices=DEVICES)
  assert 'last good checkpoint is step 1' in str(err.value)
  assert _steps(workdir) == [1]
  saved = _saved(workdir, 1)
  assert all(np.isfinite(x).all() for x in jax.tree.leaves(saved['params']))
