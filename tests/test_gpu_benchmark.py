"""benchmarks/gpu.sh in its tiny mode: the accelerator benchmark's code path, run on the CPU."""

import json
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_gpu_benchmark_tiny_mode_runs_both_cases(tmp_path):
  env = dict(os.environ, XLA_FLAGS='', PYTHONPATH='')  # one device, as a single-GPU machine
  out = tmp_path / 'out'
  proc = subprocess.run(['bash', os.path.join(ROOT, 'benchmarks', 'gpu.sh'), '--tiny',
                         '--steps', '1', '--warmup', '0', '--out', str(out)],
                        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  records = json.loads(proc.stdout.strip().splitlines()[-1])
  assert [r['case'] for r in records] == ['simclr_resnet50', 'mae_vit_b16']
  for r in records:
    assert r['images_per_s'] > 0 and r['step_gflops_per_image'] > 0, r
    assert r['device_kind'] == 'cpu' and r['peak_tflops'] is None  # no MFU on a CPU
    assert 'torch_images_per_s' in r or 'torch_error' in r
  assert json.loads((out / 'gpu_results.json').read_text()) == records
  assert (out / 'gpu_images_per_s.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_peak_table_prefers_the_specific_name():
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('gpu_bench',
                                                os.path.join(ROOT, 'benchmarks', 'gpu.py'))
  gpu = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(gpu)
  assert gpu.peak_tflops('NVIDIA H100 PCIe') == 756.0
  assert gpu.peak_tflops('NVIDIA H100 80GB HBM3') == 989.0
  assert gpu.peak_tflops('NVIDIA H200') == 989.0 and gpu.peak_tflops('cpu') is None
