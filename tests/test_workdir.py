"""jssl.train.workdir: a run folder is writable, used by one live run, and holds one run."""

import json
import os
import socket
import subprocess
import sys

import ml_collections
import pytest

from jssl.train import workdir as workdir_lib


def _config(method='simclr', **changes):
  c = ml_collections.ConfigDict({
      'method': {'name': method, 'temperature': 0.1}, 'seed': 0, 'batch_size': 256,
      'total_steps': 100, 'total_epochs': 0, 'model': {'name': 'resnet_tiny', 'width': 16},
      'optim': {'lr': 1.0}, 'eval': {'every_epochs': 0}, 'log': {'every_steps': 10},
      'checkpoint': {'every_steps': 100, 'keep': 3, 'use_async': True},
      'data': {'source': 'embedded', 'prefetch': 2}})
  for key, value in changes.items():
    node = c
    *path, last = key.split('.')
    for part in path:
      node = node[part]
    node[last] = value
  return c


def _finished(tmp_path, config):
  release = workdir_lib.claim(str(tmp_path), config, lambda s: None)
  (tmp_path / 'checkpoints').mkdir()
  release()


def test_a_live_run_holds_the_workdir_and_a_dead_ones_lock_is_taken_over(tmp_path):
  live = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])
  try:
    (tmp_path / '.lock').write_text(json.dumps({'pid': live.pid, 'host': socket.gethostname()}))
    with pytest.raises(workdir_lib.WorkdirError, match=f'pid {live.pid}'):
      workdir_lib.claim(str(tmp_path), _config(), lambda s: None)
  finally:
    live.kill()
    live.wait()
  logs = []  # the same pid, now dead: a killed run's stale lock
  release = workdir_lib.claim(str(tmp_path), _config(), logs.append)
  assert 'no longer exists' in logs[0]
  assert json.loads((tmp_path / '.lock').read_text())['pid'] == os.getpid()
  second = subprocess.run(  # another process, while this one holds the workdir
      [sys.executable, '-c', 'import sys, ml_collections; from jssl.train import workdir as w; '
       'c = ml_collections.ConfigDict({"method": {"name": "simclr"}}); '
       'w.claim(sys.argv[1], c, print)', str(tmp_path)], capture_output=True, text=True)
  assert second.returncode != 0 and f'pid {os.getpid()}' in second.stderr, second.stderr
  release()
  assert not (tmp_path / '.lock').exists()


def test_another_method_or_changed_keys_are_refused_safe_keys_are_not(tmp_path):
  _finished(tmp_path, _config())
  with pytest.raises(workdir_lib.WorkdirError, match="holds a 'simclr' run, not 'byol'"):
    workdir_lib.claim(str(tmp_path), _config('byol'), lambda s: None)
  with pytest.raises(workdir_lib.WorkdirError) as e:
    workdir_lib.claim(str(tmp_path), _config(**{'optim.lr': 0.5, 'method.temperature': 0.2}),
                      lambda s: None)
  assert 'method.temperature, optim.lr' in str(e.value)
  safe = _config(**{'total_steps': 500, 'eval.every_epochs': 5, 'log.every_steps': 50,
                    'checkpoint.every_steps': 10, 'data.source': 'folder:/elsewhere'})
  workdir_lib.claim(str(tmp_path), safe, lambda s: None)()
  assert json.loads((tmp_path / 'config.json').read_text())['total_steps'] == 500


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes through file permissions')
def test_an_unwritable_workdir_is_named(tmp_path):
  (tmp_path / 'ro').mkdir()
  os.chmod(tmp_path / 'ro', 0o500)
  with pytest.raises(workdir_lib.WorkdirError, match='cannot be written'):
    workdir_lib.claim(str(tmp_path / 'ro' / 'run'), _config(), lambda s: None)


def test_a_workdir_under_a_file_is_named(tmp_path):
  (tmp_path / 'file').write_text('x')
  with pytest.raises(workdir_lib.WorkdirError, match='cannot be written'):
    workdir_lib.claim(str(tmp_path / 'file' / 'run'), _config(), lambda s: None)
