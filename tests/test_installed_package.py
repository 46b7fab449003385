"""`pip install .` (not editable): the shipped configs travel with the package, and
`python -m jssl.main` run from another folder trains the default config and configs by name."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
  target = tmp_path_factory.mktemp('site')
  subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps',
                  '--no-build-isolation', '--target', str(target), ROOT], check=True,
                 cwd=str(target))
  assert os.path.isfile(target / 'jssl' / 'configs' / 'simclr.py')
  env = dict(os.environ, PYTHONPATH=str(target))
  return target, env


def _main(args, env, cwd):
  return subprocess.run([sys.executable, '-m', 'jssl.main'] + args, env=env, cwd=cwd,
                        capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_installed_package_trains_the_default_and_named_configs(installed, tmp_path):
  target, env = installed
  fast = ['--config.total_steps=2', '--config.eval.at_start=False', '--config.eval.final=False',
          '--config.log.tensorboard=False', '--config.batch_size=16']
  out = _main(['--workdir', 'runs/x'] + fast, env, str(tmp_path))
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result['step'] == 2 and (tmp_path / 'runs' / 'x' / 'config.json').is_file()
  config = json.loads((tmp_path / 'runs' / 'x' / 'config.json').read_text())
  assert config['method']['name'] == 'simclr' and config['preset'] == 'tiny'
  out = _main(['--config', 'byol:tiny', '--workdir', 'runs/y'] + fast, env, str(tmp_path))
  assert out.returncode == 0, out.stderr[-2000:]
  assert json.loads((tmp_path / 'runs' / 'y' / 'config.json').read_text())['method']['name'] == 'byol'
  code = 'import jssl; print(jssl.__file__)'
  where = subprocess.run([sys.executable, '-c', code], env=env, cwd=str(tmp_path),
                         capture_output=True, text=True, check=True).stdout
  assert where.startswith(str(target)), where  # the installed copy ran, not the checkout


@pytest.mark.parametrize('value,message', [
    ('configs/nosuch.py', "config file not found: 'configs/nosuch.py'"),
    ('nosuch', 'shipped configs: barlow_twins'),
    ('simclr:nosuch', "unknown preset 'nosuch'"),
    ('configs/simclr.py:nosuch', "choose 'tiny'"),
])
def test_a_bad_config_is_one_error_line_with_exit_2(value, message, tmp_path):
  out = subprocess.run([sys.executable, '-m', 'jssl.main', '--config', value, '--workdir',
                        str(tmp_path / 'w')], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  lines = [l for l in out.stderr.splitlines() if l.strip()]
  assert lines[-1].startswith('error: bad --config') and message in lines[-1], lines
  assert 'Traceback' not in out.stderr
