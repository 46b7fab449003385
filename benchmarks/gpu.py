"""The accelerator benchmark: jssl's train step against PyTorch's, in one call.

    bash benchmarks/gpu.sh [--out DIR] [--steps 20] [--warmup 3] [--tiny]

Cases (synthetic device batches, no data pipeline, no TensorFlow; jssl.bench.step.measure):
- simclr_resnet50: `configs/simclr.py:imagenet` (ResNet-50, 2 x 224 px views) in bfloat16;
- mae_vit_b16: `configs/mae.py:imagenet` (ViT-B/16 at 224 px, 75% masked, decoder 8 x 512) in
  bfloat16, with cuDNN attention on NVIDIA GPUs.
Each reports images/s and the model FLOPs utilization: XLA's FLOP count of the compiled step
per second over the device's peak dense bfloat16 rate (`PEAK_TFLOPS`, by device kind). The
PyTorch references of the same steps (benchmarks/torch_reference.py, ResNet-50 SimCLR in AMP
bfloat16 and channels-last; benchmarks/torch_reference_vit.py, MAE in AMP bfloat16) run in the
same call when torch is installed; their utilization uses jssl's FLOP count of the same model.

`--tiny` shrinks both cases (ResNet-18 width 8 at 32 px, a 1-block ViT at 32 px, batch 8,
float32) so the same script runs in seconds on a CPU: the test suite runs it.

Writes DIR/gpu_results.json (one record per case) and DIR/gpu_images_per_s.png (jssl against
PyTorch per case); the last stdout line is the JSON of the records.
"""

import argparse
import importlib.util
import json
import os
import sys
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Peak dense bfloat16 tensor-core / MXU rates in TFLOP/s, matched by substring of device_kind
# (first match wins: the PCIe H100 before the SXM one).
PEAK_TFLOPS = (('H100 PCIe', 756.0), ('H200', 989.0), ('H100', 989.0), ('GH200', 989.0),
               ('B200', 2250.0), ('A100', 312.0), ('L40S', 362.0), ('L4', 121.0),
               ('A10', 125.0), ('V100', 125.0), ('TPU v6', 918.0), ('TPU v5p', 459.0),
               ('TPU v5', 197.0), ('TPU v4', 275.0))

CASES = {
    'simclr_resnet50': ('simclr', 'imagenet', {'model.dtype': 'bfloat16'}),
    'mae_vit_b16': ('mae', 'imagenet', {'model.dtype': 'bfloat16'}),
}
TINY = {
    'simclr_resnet50': {'model.dtype': 'float32', 'model.name': 'resnet18', 'model.width': 8,
                        'model.stem': 'cifar', 'model.conv_weight_grad': 'xla',
                        'data.augment.image_size': 32, 'method.proj_hidden_dims': (32,),
                        'method.proj_dim': 16},
    'mae_vit_b16': {'model.dtype': 'float32', 'model.width': 32, 'model.depth': 1,
                    'model.num_heads': 2, 'model.patch_size': 8, 'method.decoder_width': 16,
                    'method.decoder_depth': 1, 'method.decoder_num_heads': 2,
                    'data.augment.image_size': 32},
}


def peak_tflops(device_kind: str):
  """The device's peak dense bfloat16 TFLOP/s, or None when unknown (a CPU)."""
  for name, peak in PEAK_TFLOPS:
    if name.lower() in device_kind.lower():
      return peak
  return None


def load_config(name: str, preset: str, overrides: dict, batch_size: int):
  """`configs/NAME.py:PRESET` with dotted `overrides` and the batch size set."""
  from jssl import config_files  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location(f'config_{name}', config_files.resolve(name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(preset)
  with config.unlocked():
    config.batch_size = batch_size
    for key, value in overrides.items():
      node = config
      *parents, last = key.split('.')
      for p in parents:
        node = node[p]
      node[last] = value
  return config


def torch_case(case: str, config, steps: int, warmup: int, amp: bool) -> dict:
  """The PyTorch reference of a case, or {'error': why}."""
  try:
    import torch  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    return {'error': 'torch is not installed'}
  size = int(config.data.augment.get('image_size', None) or 224)
  try:
    if case.startswith('simclr'):
      from benchmarks import torch_reference  # pylint: disable=g-import-not-at-top
      return torch_reference.time_step(
          batch_size=config.batch_size, image_size=size, steps=steps, warmup=warmup,
          channels_last=True, arch=config.model.name,
          stem='cifar' if config.model.stem == 'cifar' else 'imagenet', amp=amp)
    from benchmarks import torch_reference_vit  # pylint: disable=g-import-not-at-top
    from jssl import models  # pylint: disable=g-import-not-at-top
    enc, m = models.from_config(config.model), config.method
    return torch_reference_vit.time_step(
        batch_size=config.batch_size, image_size=size, patch=enc.patch_size, width=enc.width,
        depth=enc.depth, heads=enc.num_heads, dec_width=int(m.decoder_width),
        dec_depth=int(m.decoder_depth), dec_heads=int(m.decoder_num_heads),
        mask_ratio=float(m.mask_ratio), steps=steps, warmup=warmup, amp=amp)
  except Exception as e:  # noqa: BLE001 (report, keep the other cases)
    return {'error': f'{type(e).__name__}: {e}'}


def run_case(case: str, batch_size: int, steps: int, warmup: int, tiny: bool) -> dict:
  import jax  # pylint: disable=g-import-not-at-top
  from jssl.bench import step  # pylint: disable=g-import-not-at-top
  name, preset, overrides = CASES[case]
  overrides = dict(overrides, **(TINY[case] if tiny else {}))
  gpu = jax.default_backend() == 'gpu'
  if name == 'mae' and gpu:
    overrides['model.attention_impl'] = 'cudnn'
  config = load_config(name, preset, overrides, batch_size)
  record = {'case': case, 'config': f'{name}:{preset}', 'overrides': overrides}
  try:
    record.update(step.measure(config, steps, warmup))
  except Exception as e:  # noqa: BLE001 (report, keep the other cases)
    record['error'] = f'{type(e).__name__}: {e}'
    traceback.print_exc()
    return record
  peak = peak_tflops(record['device_kind'])
  record['peak_tflops'] = peak
  if peak and record.get('achieved_tflops'):
    record['mfu'] = record['achieved_tflops'] / peak
  ref = torch_case(case, config, steps, warmup, amp=not tiny)
  record.update({f'torch_{k}': v for k, v in ref.items()})
  if 'images_per_s' in ref:
    record['jax_over_torch'] = record['images_per_s'] / ref['images_per_s']
    if peak and record.get('step_gflops_per_image'):
      record['torch_mfu'] = record['step_gflops_per_image'] * ref['images_per_s'] / 1e3 / peak
  return record


def plot(records: list, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  cases = [r['case'] for r in records]
  jax_ips = [r.get('images_per_s', 0.0) for r in records]
  torch_ips = [r.get('torch_images_per_s', 0.0) for r in records]
  fig, ax = plt.subplots(figsize=(6, 3.5))
  xs = range(len(cases))
  ax.bar([x - 0.2 for x in xs], jax_ips, 0.4, label='jssl (JAX)')
  ax.bar([x + 0.2 for x in xs], torch_ips, 0.4, label='PyTorch')
  ax.set_xticks(list(xs), cases)
  ax.set_ylabel('images/s')
  kind = next((r.get('device_kind') for r in records if r.get('device_kind')), '?')
  ax.set_title(f'train step throughput on {kind}')
  ax.legend()
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main():
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out', default='gpu_out')
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--batch_size', type=int, default=0, help='0: 256 (8 with --tiny)')
  parser.add_argument('--cases', default=','.join(CASES))
  parser.add_argument('--tiny', action='store_true')
  args = parser.parse_args()
  unknown = sorted(set(args.cases.split(',')) - set(CASES))
  if unknown:
    sys.exit(f'error: unknown --cases {unknown}; choose from {sorted(CASES)}')
  os.makedirs(args.out, exist_ok=True)
  batch = args.batch_size or (8 if args.tiny else 256)
  records = []
  for case in args.cases.split(','):
    record = run_case(case, batch, args.steps, args.warmup, args.tiny)
    records.append(record)
    print(json.dumps(record), file=sys.stderr, flush=True)
  with open(os.path.join(args.out, 'gpu_results.json'), 'w') as f:
    json.dump(records, f, indent=2)
  plot(records, os.path.join(args.out, 'gpu_images_per_s.png'))
  print(json.dumps(records), flush=True)
  if any('error' in r for r in records):
    sys.exit(1)


if __name__ == '__main__':
  main()
