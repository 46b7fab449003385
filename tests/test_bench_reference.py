"""jssl.bench.step's PyTorch references run as scripts in processes of their own (so their peak
memory is theirs): the flags they get, the faster layout, and a failure that names its cause.
The scripts here stand in for benchmarks/torch_reference*.py, so no torch is needed."""

import importlib.util
import pathlib
import textwrap

import pytest

from jssl.bench import step

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(method):
  spec = importlib.util.spec_from_file_location(f'cfg_{method}', ROOT / 'configs' / f'{method}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config('cifar10')


def _script(folder, name, body):
  (folder / f'{name}.py').write_text(textwrap.dedent(body))


def test_run_reference_passes_flags_and_reads_the_last_line(tmp_path, monkeypatch):
  _script(tmp_path, 'echo_reference', '''
      import json, sys
      print('a first line that is not JSON')
      print(json.dumps({'argv': sys.argv[1:]}))
  ''')
  monkeypatch.setattr(step, '_BENCHMARKS', str(tmp_path))
  out = step.run_reference('echo_reference', batch_size=8, channels_last=True, amp=False,
                           mask_ratio=0.75)
  assert out == {'argv': ['--batch_size=8', '--channels_last', '--mask_ratio=0.75']}


def test_resnet_reference_keeps_the_faster_layout_and_both_memories(tmp_path, monkeypatch):
  _script(tmp_path, 'torch_reference', '''
      import json, sys
      cl = '--channels_last' in sys.argv
      print(json.dumps({'step_ms': 100.0 if cl else 200.0, 'images_per_s': 20.0 if cl else 10.0,
                        'peak_rss_mb': 300.0 if cl else 400.0, 'argv': sys.argv[1:]}))
  ''')
  monkeypatch.setattr(step, '_BENCHMARKS', str(tmp_path))
  config = _config('simclr')
  out = step.torch_reference(config, steps=2, warmup=1)
  assert out['torch_images_per_s'] == 20.0 and out['torch_peak_rss_mb'] == 300.0
  assert out['torch_contiguous_images_per_s'] == 10.0
  assert out['torch_channels_last_peak_rss_mb'] == 300.0
  assert out['torch_contiguous_peak_rss_mb'] == 400.0
  assert f'--batch_size={config.batch_size}' in out['torch_argv']
  assert '--steps=2' in out['torch_argv'] and '--image_size=32' in out['torch_argv']


def test_vit_reference_gets_the_config_sizes(tmp_path, monkeypatch):
  _script(tmp_path, 'torch_reference_vit', '''
      import json, sys
      print(json.dumps({'step_ms': 1.0, 'images_per_s': 1.0, 'peak_rss_mb': 1.0,
                        'argv': sys.argv[1:]}))
  ''')
  monkeypatch.setattr(step, '_BENCHMARKS', str(tmp_path))
  config = _config('mae')
  argv = step.torch_reference(config, steps=1, warmup=0)['torch_argv']
  assert f'--mask_ratio={float(config.method.mask_ratio)}' in argv
  assert f'--dec_depth={int(config.method.decoder_depth)}' in argv
  assert f'--norm_pix_loss={int(bool(config.method.norm_pix_loss))}' in argv


@pytest.mark.parametrize('body,expected', [
    ("raise ModuleNotFoundError(\"No module named 'torch'\")", "No module named 'torch'"),
    ('pass', 'exited with 0'),  # no JSON line at all
])
def test_a_failing_reference_is_a_torch_error_with_its_cause(tmp_path, monkeypatch, body,
                                                               expected):
  _script(tmp_path, 'torch_reference', body + '\n')
  monkeypatch.setattr(step, '_BENCHMARKS', str(tmp_path))
  out = step.torch_reference(_config('simclr'), steps=1, warmup=0)
  assert set(out) == {'torch_error'} and expected in out['torch_error']


def test_a_missing_reference_is_a_torch_error(tmp_path, monkeypatch):
  monkeypatch.setattr(step, '_BENCHMARKS', str(tmp_path))
  out = step.torch_reference(_config('simclr'), steps=1, warmup=0)
  assert 'not found' in out['torch_error']
