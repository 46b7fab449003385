"""A checkpoint or log that cannot be written stops the run with one line; the newest complete
checkpoint stays restorable."""

import os
import resource
import subprocess
import sys

import jax
import orbax.checkpoint as ocp
import pytest
import scripts

from jssl.train import checkpoint, loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_failed_checkpoint_write_stops_the_run_and_keeps_the_last_good_one(tmp_path,
                                                                             monkeypatch):
  import test_checkpoint_resume  # pylint: disable=g-import-not-at-top (its shrunk config)
  config = test_checkpoint_resume.loop_config()  # a checkpoint every 2 of 6 steps
  config.checkpoint.use_async = False
  save = ocp.CheckpointManager.save

  def full_disk(self, step, *args, **kwargs):
    if step == 4:
      raise OSError(28, 'No space left on device')
    return save(self, step, *args, **kwargs)

  monkeypatch.setattr(ocp.CheckpointManager, 'save', full_disk)
  workdir = str(tmp_path / 'run')
  with pytest.raises(checkpoint.WriteFailedError) as e:
    loop.train(config, workdir, devices=jax.devices()[:1], log=lambda s: None)
  assert 'the checkpoint of step 4' in str(e.value) and 'No space left' in str(e.value)
  assert 'newest complete checkpoint: step 2' in str(e.value)
  monkeypatch.undo()
  assert not os.path.exists(os.path.join(workdir, '.lock'))  # released
  result = loop.train(config, workdir, devices=jax.devices()[:1], log=lambda s: None)
  assert result['step'] == 6  # resumed from step 2 and finished


@pytest.mark.slow
def test_a_file_size_limit_is_one_error_line(tmp_path):
  """RLIMIT_FSIZE below the checkpoint's data file: the first save fails (EFBIG, not SIGXFSZ)
  and the run ends with one error line."""
  faults = scripts.load('faults')
  limit = 48 * 1024

  def small_files():
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

  cmd = faults.command(str(tmp_path / 'run'), 4) + ['--config.model.width=32',
                                                    '--config.checkpoint.use_async=False']
  out = subprocess.run(cmd, cwd=ROOT, env=faults.env(), capture_output=True, text=True,
                       preexec_fn=small_files, timeout=300)
  errors = [l for l in out.stderr.splitlines() if l.startswith('error:')]
  assert out.returncode == 1, out.stderr[-3000:]
  assert len(errors) == 1 and 'writing the checkpoint of step' in errors[0], out.stderr[-3000:]
  # (orbax's writer threads may log their own failure around it)
