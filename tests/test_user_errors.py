"""Every user error of `python -m jssl.main` is one `error:` line, exit status 2, no traceback."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(tmp_path, *args):
  cmd = [sys.executable, '-m', 'jssl.main', '--config', 'simclr:tiny', '--config.total_steps=2',
         '--config.batch_size=8', '--config.eval.at_start=False', '--config.eval.final=False',
         '--workdir', str(tmp_path / 'run')] + list(args)
  return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def _folder(tmp_path, kind):
  root = tmp_path / kind
  (root / 'a').mkdir(parents=True)
  if kind == 'garbage':
    for i in range(10):
      (root / 'a' / f'{i}.jpg').write_bytes(os.urandom(300))
  elif kind == 'no_images':
    (root / 'a' / 'notes.txt').write_text('not an image')
  return f'folder:{root}'


@pytest.mark.parametrize('case,message', [
    ('missing', 'image folder not found'),
    pytest.param('no_images', 'no images (.jpg, .jpeg, .png) found in folder',
                 marks=pytest.mark.slow),
    ('garbage', 'unreadable images, the first'),
    pytest.param('workdir_under_a_file', 'cannot be written', marks=pytest.mark.slow),
    pytest.param('batch_size', 'config.batch_size=12 must be a multiple of the number of devices',
                 marks=pytest.mark.slow),
])
def test_user_errors_are_one_line_with_exit_2(tmp_path, case, message):
  if case == 'missing':
    args = [f'--config.data.source=folder:{tmp_path / "nowhere"}']
  elif case == 'batch_size':
    args = ['--config.batch_size=12']
  elif case == 'workdir_under_a_file':
    (tmp_path / 'file').write_text('x')
    args = ['--workdir', str(tmp_path / 'file' / 'run')]
  else:
    source = _folder(tmp_path, case)
    args = [f'--config.data.source={source}', f'--config.data.eval_source={source}']
  out = _run(tmp_path, *args)
  assert out.returncode == 2, out.stderr[-3000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and message in errors[0], out.stderr[-3000:]
  assert 'Traceback' not in out.stderr
