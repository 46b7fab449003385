"""A checkpoint that cannot be read is moved aside and the previous one restored; when none can
be read, one error names the directory."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from jssl.train import checkpoint
from jssl.train import state as state_lib


def _state(v):
  return state_lib.TrainState(
      step=jnp.asarray(v, jnp.int32), params={'w': jnp.full((64, 64), float(v)),
                                              'b': jnp.arange(5.0) * v},
      batch_stats={}, opt_state={}, method_state={}, rng=jnp.zeros((2,), jnp.uint32))


def _files(step_dir):
  out = [os.path.join(r, f) for r, _, fs in os.walk(step_dir) for f in fs]
  return sorted(out, key=os.path.getsize)


def _truncate(step_dir):
  path = _files(step_dir)[-1]  # the largest: array data
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)


def _no_metadata(step_dir):
  for path in _files(step_dir):
    if os.path.basename(path) in ('_METADATA', '_CHECKPOINT_METADATA', 'manifest.ocdbt'):
      os.remove(path)


def _garbage(step_dir):
  path = _files(step_dir)[-1]
  size = os.path.getsize(path)
  with open(path, 'wb') as f:
    f.write(np.random.default_rng(0).bytes(size))


@pytest.mark.parametrize('corrupt', [_truncate, _no_metadata, _garbage])
def test_unreadable_newest_checkpoint_falls_back_to_the_previous(tmp_path, corrupt):
  directory = str(tmp_path / 'checkpoints')
  ckpt = checkpoint.Checkpointer(directory, every_steps=1, keep=3, use_async=False)
  for v in (1, 2):
    ckpt.save(_state(v))
  ckpt.close()
  corrupt(os.path.join(directory, '2'))
  ckpt = checkpoint.Checkpointer(directory, every_steps=1, keep=3, use_async=False)
  warnings = []
  restored = ckpt.restore_newest_readable(_state(0), warnings.append)
  ckpt.close()
  assert int(restored.step) == 1 and float(restored.params['w'][0, 0]) == 1.0
  assert len(warnings) == 1 and 'step 2' in warnings[0] and directory in warnings[0]
  assert not os.path.exists(os.path.join(directory, '2'))
  assert os.path.isdir(os.path.join(directory + '.unreadable', '2'))  # moved aside, not deleted
  ckpt = checkpoint.Checkpointer(directory, every_steps=1, keep=3, use_async=False)
  assert ckpt.latest_step() == 1
  ckpt.close()


def test_no_readable_checkpoint_is_one_error_naming_the_directory(tmp_path):
  directory = str(tmp_path / 'checkpoints')
  ckpt = checkpoint.Checkpointer(directory, every_steps=1, keep=3, use_async=False)
  ckpt.save(_state(1))
  ckpt.close()
  _garbage(os.path.join(directory, '1'))
  ckpt = checkpoint.Checkpointer(directory, every_steps=1, keep=3, use_async=False)
  with pytest.raises(checkpoint.UnreadableCheckpointError, match=directory):
    ckpt.restore_newest_readable(_state(0), lambda s: None)
  ckpt.close()
