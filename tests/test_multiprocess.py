"""Multi-process training on localhost: 2 processes x 4 CPU devices train as 1 process x 8.

The runs go through launch/local_multiprocess.sh and `python -m jssl.main`, the real
multi-process path: jax.distributed on localhost, gloo collectives between the processes, each
process feeding its half of the global batch, orbax checkpoints written by both, logs and the
JSON line from process 0 only. The reference is the same config trained in this (8-device)
pytest process. Each launch costs two Python start-ups (TensorFlow, JAX) and a compilation,
30-100 s on two CPU cores, so the default suite launches once (SimCLR: 2 x 4 == 1 x 8 step by
step, and a SIGTERM to one process stops both at one step with a checkpoint); resuming that
run to the end (with the padded evaluation) and BYOL are marked slow.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jssl import distributed
from jssl.train import loop

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, 'launch', 'local_multiprocess.sh')
LAUNCH_TIMEOUT_S = 400

CONFIG = '''"""configs/<method>.py shrunk for tests/test_multiprocess.py: a 1-block ResNet of width 4, 8 px
views of 64 synthetic images, batch 16, checkpoints every 2 steps, kNN at the end only."""
import importlib.util
import os


def get_config(arg):
  method, total_steps = arg.split(',')
  spec = importlib.util.spec_from_file_location(
      'mp_' + method, os.path.join({root!r}, 'configs', method + '.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config()
  c.model.update(width=4, stage_sizes=(1,))
  c.method.update(proj_hidden_dims=(16,), proj_dim=8)
  if method == 'byol':
    c.method.update(pred_hidden_dims=(16,))
  c.data.update(source='synthetic', eval_source='synthetic', image_size=8)
  c.data.synthetic.update(image_size=12, num_examples=64, num_classes=4)
  c.data.augment.image_size = 8
  c.data.eval_augment.image_size = 8
  c.batch_size, c.total_steps = 16, int(total_steps)
  c.checkpoint.update(every_steps=2, keep=10)
  c.log.update(every_steps=1, tensorboard=False)
  # 64 eval images in global batches of 24: the last batch is padded on both processes
  c.eval.update(every_epochs=0, at_start=False, final=True, batch_size=24, knn_k=(5,))
  return c
'''


def _config_file(tmp_path) -> str:
  path = tmp_path / 'mp_config.py'
  path.write_text(CONFIG.format(root=ROOT))
  return str(path)


def _load_config(path: str, arg: str):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('mp_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


class Launch:
  """`launch/local_multiprocess.sh 2 4 -- --config ... --workdir ...`, stderr read line by line.

  A watchdog kills the whole process group after LAUNCH_TIMEOUT_S, so a hang fails the test
  instead of blocking the suite.
  """

  def __init__(self, config_arg: str, workdir: str, cache_dir: str):
    # the persistent compilation cache spares process 0 the compilation on a relaunch
    env = dict(os.environ, PYTHON=sys.executable, JAX_PLATFORMS='cpu',
               JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
               JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
    env.pop('XLA_FLAGS', None)  # the launcher sets 4 devices per process
    self.proc = subprocess.Popen(
        ['bash', LAUNCH, '--port', str(_free_port()), '2', '4', '--', '--config', config_arg,
         '--workdir', workdir], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    self.lines = []
    self._timer = threading.Timer(LAUNCH_TIMEOUT_S, self.kill)
    self._timer.start()

  def kill(self):
    try:
      os.killpg(self.proc.pid, signal.SIGKILL)
    except ProcessLookupError:
      pass

  def stderr_lines(self):
    for line in self.proc.stderr:
      self.lines.append(line)
      yield line

  def process_pid(self, process_id: int) -> int:
    """The pid of the launcher's child that runs `--process_id process_id`."""
    pid = self.proc.pid
    with open(f'/proc/{pid}/task/{pid}/children') as f:
      children = [int(c) for c in f.read().split()]
    for child in children:
      with open(f'/proc/{child}/cmdline', 'rb') as f:
        args = f.read().split(b'\0')
      if args[args.index(b'--process_id') + 1] == str(process_id).encode():
        return child
    raise AssertionError(f'no child with --process_id {process_id} among {children}')

  def result(self) -> dict:
    """Waits for the end; the JSON line of process 0 (the exit status must be 0)."""
    for _ in self.stderr_lines():
      pass
    out = self.proc.stdout.read()
    self.proc.wait()
    self._timer.cancel()
    log = ''.join(self.lines)
    assert self.proc.returncode == 0, f'exit {self.proc.returncode}\n{out}\n{log[-6000:]}'
    json_lines = [l for l in out.splitlines() if l.startswith('{')]
    assert len(json_lines) == 1, f'one JSON line expected (process 0 only):\n{out}'
    return json.loads(json_lines[0])


def _saved(workdir: str, step: int, like=None):
  """The saved state; `like`: a restored state whose structure to restore onto this process's
  first device (a 2-process checkpoint has another topology than this process; a one-process
  run saves host arrays, which carry no sharding)."""
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = None if like is None else jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=device), like)
  return ocp.StandardCheckpointer().restore(
      os.path.join(workdir, 'checkpoints', str(step), 'default'), target)


def _assert_same_state(a, b):
  assert int(a['step']) == int(b['step'])
  for part in ('params', 'batch_stats', 'opt_state', 'method_state'):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=2e-4, atol=2e-6),
                 a[part], b[part])


def _reference(tmp_path, config_path: str, arg: str, **train_kw):
  """The same run in this process on its 8 devices: (result, workdir)."""
  workdir = str(tmp_path / 'one_process')
  config = _load_config(config_path, arg)
  if train_kw.get('stop_after_step'):
    config.checkpoint.every_steps = 1  # a checkpoint at the step where the run is stopped
  result = loop.train(config, workdir, **train_kw)
  return result, workdir


def _metrics(workdir: str) -> dict:
  """{step: loss} of metrics.jsonl, failing on a step written twice (by two processes)."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    records = [json.loads(l) for l in f if '"loss"' in l]
  steps = [r['step'] for r in records]
  assert len(steps) == len(set(steps)), steps
  return {r['step']: r['loss'] for r in records}


def _sigterm_one_process(config_arg: str, workdir: str, cache: str) -> dict:
  """Launches 2 x 4 and sends SIGTERM to process 1 alone once training runs (process 0 logs
  step 1 only after both processes took it); returns process 0's JSON result."""
  run = Launch(config_arg, workdir, cache)
  for line in run.stderr_lines():
    if line.startswith('step 1/'):
      os.kill(run.process_pid(1), signal.SIGTERM)
      break
  return run.result()


TOTAL = 8


def test_two_processes_train_as_one_and_stop_together(tmp_path):
  """The default-suite test: one launch (two Python start-ups, one compilation)."""
  assert jax.device_count() == 8
  config_path = _config_file(tmp_path)
  arg = f'simclr,{TOTAL}'
  workdir = str(tmp_path / 'two_processes')

  # process 0 got no signal, yet both processes stopped at one step k and saved it together
  stopped = _sigterm_one_process(f'{config_path}:{arg}', workdir, str(tmp_path / 'jax_cache'))
  k = stopped['step']
  assert stopped.get('stopped') == 'SIGTERM' and 2 <= k < TOTAL, stopped

  # == one process with the 8 devices over the same k steps: every loss and every array
  _, ref_workdir = _reference(tmp_path, config_path, arg, stop_after_step=k)
  two, one = _metrics(workdir), _metrics(ref_workdir)
  assert sorted(two) == sorted(one) == list(range(1, k + 1))  # process 0 alone logs
  np.testing.assert_allclose([two[s] for s in two], [one[s] for s in two], rtol=1e-4)
  np.testing.assert_allclose(stopped['loss'], one[k], rtol=1e-4)
  ref_state = _saved(ref_workdir, k)
  _assert_same_state(_saved(workdir, k, like=ref_state), ref_state)


@pytest.mark.slow
def test_two_processes_resume_after_sigterm(tmp_path):
  config_path = _config_file(tmp_path)
  arg = f'simclr,{TOTAL}'
  workdir, cache = str(tmp_path / 'two_processes'), str(tmp_path / 'jax_cache')
  k = _sigterm_one_process(f'{config_path}:{arg}', workdir, cache)['step']
  assert os.path.isdir(os.path.join(workdir, 'checkpoints', str(k)))

  # the same command resumes from step k and finishes, with the final kNN evaluation
  run = Launch(f'{config_path}:{arg}', workdir, cache)
  final = run.result()
  assert any(l.startswith(f'resumed from step {k} ') for l in run.lines), run.lines
  assert final['step'] == TOTAL and 'stopped' not in final

  # == one process with the 8 devices: loss, kNN accuracy (padded eval batches) and state
  ref, ref_workdir = _reference(tmp_path, config_path, arg)
  np.testing.assert_allclose(final['loss'], ref['loss'], rtol=1e-4)
  assert final['knn_top1'] == pytest.approx(ref['knn_top1'], abs=1e-6)
  ref_state = _saved(ref_workdir, TOTAL)
  _assert_same_state(_saved(workdir, TOTAL, like=ref_state), ref_state)
  assert sorted(_metrics(workdir)) == list(range(1, TOTAL + 1))
  assert os.path.exists(os.path.join(workdir, 'curves.png'))


@pytest.mark.slow
def test_byol_two_processes_train_as_one(tmp_path):
  config_path = _config_file(tmp_path)
  arg = 'byol,4'
  workdir = str(tmp_path / 'two_processes')
  final = Launch(f'{config_path}:{arg}', workdir, str(tmp_path / 'jax_cache')).result()
  ref, ref_workdir = _reference(tmp_path, config_path, arg)
  assert final['step'] == ref['step'] == 4
  np.testing.assert_allclose(final['loss'], ref['loss'], rtol=1e-4)
  assert final['knn_top1'] == pytest.approx(ref['knn_top1'], abs=1e-6)
  ref_state = _saved(ref_workdir, 4)
  _assert_same_state(_saved(workdir, 4, like=ref_state), ref_state)


SLURM_STEP = {'SLURM_JOB_ID': '4242', 'SLURM_STEP_NUM_TASKS': '16', 'SLURM_PROCID': '9',
              'SLURM_LOCALID': '1', 'SLURM_STEP_NUM_NODES': '2',
              'SLURM_STEP_NODELIST': 'gpu[007-008]', 'CUDA_VISIBLE_DEVICES': '0,1,2,3,4,5,6,7'}


def test_detect_single_process_needs_nothing():
  assert distributed.detect({}) is None
  assert distributed.detect({}, num_processes=1) is None
  # the batch script of a SLURM job (no srun step) and a one-task step are single-process
  assert distributed.detect({'SLURM_JOB_ID': '1', 'SLURM_NTASKS': '8', 'SLURM_PROCID': '0'}) is None
  assert distributed.detect(dict(SLURM_STEP, SLURM_STEP_NUM_TASKS='1')) is None
  assert distributed.initialize(None) is False


def test_detect_flags_and_environments():
  setup = distributed.detect(SLURM_STEP, coordinator='10.0.0.1:1234', num_processes=2,
                             process_id=1)
  assert setup == distributed.Setup('flags', '10.0.0.1:1234', 2, 1, None)  # flags win
  assert distributed.detect({}, coordinator='auto') == distributed.Setup('auto')
  # one task per GPU (16 tasks on 2 nodes): the GPU of SLURM_LOCALID; coordinator from the job
  assert distributed.detect(SLURM_STEP) == distributed.Setup(
      'slurm', f'gpu007:{61440 + 4242 % 4096}', 16, 9, (1,))
  # one task per node: all its GPUs; SLURM already narrowed the GPUs: nothing to choose
  assert distributed.detect(dict(SLURM_STEP, SLURM_STEP_NUM_TASKS='2', SLURM_PROCID='1',
                                 JAX_COORDINATOR_PORT='999')) == distributed.Setup(
                                     'slurm', 'gpu007:999', 2, 1, None)
  assert distributed.detect(dict(SLURM_STEP, CUDA_VISIBLE_DEVICES='5')).local_device_ids is None
  assert [distributed.first_host(n) for n in ('a1', 'a1,b2', 'n[03-09,11],x', 'n[5]')] == [
      'a1', 'a1', 'n03', 'n5']


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_processes=2), 'missing: --coordinator, --process_id'),
    (dict(coordinator='h:1', process_id=0), 'missing: --num_processes'),
    (dict(coordinator='h', num_processes=2, process_id=0), 'must be HOST:PORT'),
    (dict(coordinator='h:1', num_processes=2, process_id=2), r'--process_id=2 must be in \[0'),
])
def test_detect_names_what_is_wrong(kwargs, message):
  with pytest.raises(ValueError, match=message):
    distributed.detect({}, **kwargs)
