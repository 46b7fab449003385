"""Claiming a run folder before training: writable, one live run at a time, the same run.

`claim(workdir, config, log) -> release()` (process 0; the others only wait for it):
- the folder is created and must be writable (`WorkdirError` naming it otherwise);
- `workdir/.lock` holds the pid and host of the live run: a second process refuses, naming
  that pid; a lock left by a run that no longer exists (killed) is taken over;
- a folder that already holds checkpoints must hold a run of the same config: another method,
  or changed keys that make the resume wrong, are refused, naming the keys. `SAFE_KEYS` may
  change between a run and its resume (length, evaluation, logging, checkpoint cadence, input
  pipeline performance knobs, the data location);
- then `config.json` is (re)written.
Folders on cloud storage (gs://) are not locked (no pid to check there).
"""

import json
import os
import socket

from etils import epath

SAFE_KEYS = ('total_steps', 'total_epochs', 'eval', 'log', 'checkpoint.every_steps',
             'checkpoint.keep', 'checkpoint.use_async', 'data.source', 'data.eval_source',
             'data.data_dir', 'data.prefetch', 'data.num_parallel_calls', 'data.corrupt')


class WorkdirError(ValueError):
  """The run folder cannot be used (unwritable, in use, or holding another run)."""


def _flat(d, prefix=''):
  out = {}
  for k, v in d.items():
    key = f'{prefix}{k}'
    if isinstance(v, dict):
      out.update(_flat(v, key + '.'))
    else:
      out[key] = v
  return out


def _safe(key: str) -> bool:
  return any(key == s or key.startswith(s + '.') for s in SAFE_KEYS)


def changed_keys(old: dict, new: dict) -> list:
  """The keys (dotted) whose values differ between two config dicts, safe ones left out."""
  a, b = _flat(old), _flat(new)
  norm = lambda v: json.loads(json.dumps(v, default=str))  # noqa: E731 (tuples vs lists)
  return sorted(k for k in set(a) | set(b)
                if not _safe(k) and norm(a.get(k, '<absent>')) != norm(b.get(k, '<absent>')))


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # someone else's live process
    return True
  return True


def _lock(workdir: str, log):
  path = os.path.join(workdir, '.lock')
  me = {'pid': os.getpid(), 'host': socket.gethostname()}
  for _ in range(2):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      try:
        holder = json.loads(open(path).read() or '{}')
      except (OSError, ValueError):
        holder = {}
      pid, host = holder.get('pid'), holder.get('host')
      if pid == me['pid'] and host == me['host']:  # this process claims it again
        os.remove(path)
        continue
      if isinstance(pid, int) and pid != me['pid'] and (host != me['host'] or _alive(pid)):
        raise WorkdirError(f'workdir {workdir} is in use by a live run (pid {pid} on '
                           f'{host}); stop it first or choose another --workdir') from None
      log(f'taking over the lock of a run that no longer exists (pid {pid}) in {workdir}')
      os.remove(path)
      continue
    with os.fdopen(fd, 'w') as f:
      f.write(json.dumps(me))
    return lambda: os.path.exists(path) and os.remove(path)
  raise WorkdirError(f'could not lock {path}')


def run_kind(config_dict: dict):
  """What a config trains: its method's name, or 'fine-tuning' (configs/finetune.py)."""
  if 'pretrain_workdir' in config_dict:
    return 'fine-tuning'
  return config_dict.get('method', {}).get('name')


def claim(workdir: str, config, log=print):
  """Checks and locks `workdir` for `config` (see the module docstring); returns `release()`."""
  local = '://' not in workdir
  try:
    epath.Path(workdir).mkdir(parents=True, exist_ok=True)
    if local and not os.access(workdir, os.W_OK | os.X_OK):
      raise PermissionError(f'no write permission on {workdir}')
    probe = epath.Path(workdir, '.write_test')
    probe.write_text('ok')
    probe.unlink()
  except OSError as e:
    raise WorkdirError(f'workdir {workdir} cannot be written: {e}') from None
  release = _lock(workdir, log) if local else (lambda: None)
  try:
    saved = epath.Path(workdir, 'config.json')
    if saved.exists() and epath.Path(workdir, 'checkpoints').exists():
      old, new = json.loads(saved.read_text()), json.loads(config.to_json_best_effort())
      if run_kind(old) != run_kind(new):
        raise WorkdirError(f'workdir {workdir} holds a {run_kind(old)!r} run, not '
                           f'{run_kind(new)!r}; choose another --workdir')
      keys = changed_keys(old, new)
      if keys:
        raise WorkdirError(f'workdir {workdir} holds a run whose config differs in '
                           f'{", ".join(keys)}: resuming it with these values would be wrong; '
                           'rerun with its values or choose another --workdir')
    saved.write_text(config.to_json_best_effort(indent=2))
  except BaseException:
    release()
    raise
  return release
