"""`python -m jssl.bench input`: a tiny run prints one JSON object as its last stdout line."""

import json
import os
import subprocess
import sys

import pytest

CONFIG = os.path.join(os.path.dirname(__file__), 'configs', 'bench_input.py')


def test_bench_input_prints_json_last_line(capsys):
  pytest.importorskip('jssl.data.augment')
  from jssl.bench import input as bench_input  # pylint: disable=g-import-not-at-top
  bench_input.run(['bench input', f'--config={CONFIG}:tiny', '--steps=2', '--warmup=1',
                   '--config.batch_size=4'])
  last = capsys.readouterr().out.strip().splitlines()[-1]
  result = json.loads(last)
  assert result['images_per_s'] > 0 and result['views_per_image'] == 2
  assert result['batch_size'] == 4 and result['recipe'] == 'simclr_cifar'
  assert result['source'] == 'synthetic' and result['host_cores'] >= 1


def test_bench_dispatch_rejects_unknown_command():
  out = subprocess.run([sys.executable, '-m', 'jssl.bench', 'nope'], capture_output=True,
                       text=True, check=False)
  assert out.returncode != 0 and "unknown benchmark command 'nope'" in out.stderr
