"""Checkpoints of the whole `TrainState` with orbax, in workdir/checkpoints/<step>.

`Checkpointer(directory, every_steps, keep, use_async)`:
- `save(state, force=False)`: saves at multiples of `every_steps` (or always with `force`),
  asynchronously where supported; orbax writes to a temporary folder and renames it when
  complete, so a killed run leaves only complete checkpoints; the last `keep` are kept.
- `latest_step()`: the step of the newest complete checkpoint, or None.
- `restore(target, step=None)`: the saved state with the structure, dtypes and shardings of
  `target` (a freshly created state); the newest checkpoint by default.
- `restore_newest_readable(target, warn)`: the newest checkpoint that can be read; a newer one
  that cannot (a truncated array file, missing metadata, garbage bytes) is moved aside to
  `<directory>.unreadable/<step>` (never deleted) after `warn` names its step and path; when
  none can be read, `UnreadableCheckpointError` names the directory.
- `wait()` / `close()`: block until pending saves are on disk.
The step of a state is its data position: a resumed run restarts its iterator there.
Multi-process runs: every process calls the same methods at the same steps; orbax writes each
process's shards and process 0 the metadata, and the directory may be on cloud storage (gs://).
"""

import os
import shutil

import jax
import orbax.checkpoint as ocp


class UnreadableCheckpointError(RuntimeError):
  """No checkpoint of a directory can be read."""


class WriteFailedError(OSError):
  """A checkpoint or log could not be written (a full disk, a file size limit, permissions)."""


def _first_line(error: Exception) -> str:
  text = ' '.join(str(error).split())
  return f'{type(error).__name__}: {text[:300]}'


class Checkpointer:
  """A thin wrapper around `ocp.CheckpointManager` for one `TrainState` item."""

  def __init__(self, directory: str, every_steps: int = 1000, keep: int = 3,
               use_async: bool = True):
    # gs://... (any URL) goes to orbax as is: it writes there through etils.epath / tf.io.gfile
    self.directory = directory if '://' in directory else os.path.abspath(directory)
    self.every_steps = max(int(every_steps), 1)
    self._options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, save_interval_steps=1, enable_async_checkpointing=use_async,
        create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=self._options)

  def latest_step(self):
    return self.manager.latest_step()

  def save(self, state, force: bool = False) -> bool:
    """Saves `state` if its step is due (or `force`); returns whether it saved."""
    step = int(jax.device_get(state.step))
    if not force and step % self.every_steps:
      return False
    if step in self.manager.all_steps():
      return False
    # One process holds every shard: hand orbax host copies. Orbax's own device-to-host path
    # compiles a transfer per array shape the first time (about 10 s for a small network over 8
    # devices); several processes must each write their own shards of the device arrays.
    payload = jax.device_get(state) if jax.process_count() == 1 else state
    try:
      return self.manager.save(step, args=ocp.args.StandardSave(payload), force=True)
    except Exception as e:  # noqa: BLE001 (orbax / tensorstore / the OS: any write failure)
      raise self._failed(f'the checkpoint of step {step}', e) from e

  def _failed(self, what: str, error: Exception) -> WriteFailedError:
    try:
      good = [s for s in self.manager.all_steps()
              if os.path.isfile(os.path.join(self.directory, str(s), 'commit_success.txt'))
              or '://' in self.directory]
    except Exception:  # noqa: BLE001
      good = []
    last = f'step {max(good)}' if good else 'none'
    return WriteFailedError(f'writing {what} to {self.directory} failed ({_first_line(error)}); '
                            f'the newest complete checkpoint: {last}')

  def restore(self, target, step=None):
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f'no checkpoint in {self.directory}')
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def restore_newest_readable(self, target, warn=print):
    """The newest readable checkpoint restored like `target` (see the module docstring)."""
    steps = sorted(self.manager.all_steps(), reverse=True)
    for step in steps:
      try:
        return self.restore(target, step)
      except Exception as e:  # noqa: BLE001 (orbax / tensorstore raise many kinds)
        path = os.path.join(self.directory, str(step))
        aside = os.path.join(self.directory + '.unreadable', str(step))
        warn(f'warning: the checkpoint of step {step} ({path}) cannot be read ({_first_line(e)});'
             f' moved to {aside}, restoring the previous one')
        if jax.process_index() == 0 and '://' not in self.directory:
          os.makedirs(os.path.dirname(aside), exist_ok=True)
          if os.path.exists(aside):
            shutil.rmtree(aside)
          shutil.move(path, aside)
        self.manager.close()
        self.manager = ocp.CheckpointManager(self.directory, options=self._options)
    raise UnreadableCheckpointError(
        f'no checkpoint in {self.directory} can be read (steps {steps} moved to '
        f'{self.directory}.unreadable); remove the workdir\'s checkpoints to start again')

  def wait(self) -> None:
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # noqa: BLE001 (an asynchronous save that failed)
      raise self._failed('a checkpoint', e) from e

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
