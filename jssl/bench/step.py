"""Train-step throughput: `python -m jssl.bench step --config PATH[:preset]`.

    python -m jssl.bench step --config configs/simclr.py:cifar10 [--config.batch_size=256]
        [--steps 20] [--warmup 3] [--torch_reference]

Builds the method, optimizer and state of the config, puts one synthetic batch (uniform views,
the shapes of `method.input_spec()`, sharded on the mesh) on the devices, compiles the jitted
step once (compile_s), runs `warmup` steps, then times `steps` steps one by one
(block_until_ready) and reports the median. No data pipeline, no TensorFlow. With
`--torch_reference` it also times the plain-PyTorch step that matches the config, when torch is
installed, and reports the speed ratio `jax_over_torch`: a SimCLR ResNet
(benchmarks/torch_reference.py, ResNet-18 SimCLR; timed in both the contiguous and the
channels-last layout, the faster one is the reference) or an MAE ViT
(benchmarks/torch_reference_vit.py, with the config's encoder / decoder sizes and mask ratio).
The last stdout line is one JSON object: images_per_s, step_ms, compile_s,
step_gflops_per_image and achieved_tflops (XLA's FLOP count of the compiled step: model FLOPs
for utilization on accelerators), peak_rss_mb, xla_temp_mb and xla_argument_mb (XLA's buffer
sizes of the compiled step: the activations and workspace, and the state and batch),
device_kind, device_count, ... With `--torch_reference`: torch_images_per_s, jax_over_torch,
and torch_peak_rss_mb: each PyTorch step runs in a fresh process of its own, so its peak RSS
compares with this process's (which never imports torch).
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

import jax
import numpy as np
from absl import flags
from ml_collections import config_flags

from jssl.train import param_groups, runs, sharding
from jssl.train import state as state_lib
from jssl.train import step as step_lib

_BENCHMARKS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), 'benchmarks')


def synthetic_batch(method, batch_size: int, mesh, seed: int = 0,
                    uint8_views: bool = False) -> dict:
  """Uniform [0, 1) float32 views with the method's input shapes, sharded on 'data' (uint8
  views, as the host makes them when the photometric half runs on the device, with
  `uint8_views`)."""
  rng = np.random.default_rng(seed)
  host = {k: rng.random((batch_size,) + tuple(shape), dtype=np.float32).astype(dtype)
          for k, (shape, dtype) in method.input_spec().items()}
  if uint8_views:
    host = {k: (v * 255).astype(np.uint8) if k.startswith('view_') else v
            for k, v in host.items()}
  return sharding.put_batch(host, mesh)


def step_flops(compiled) -> float:
  """XLA's count of floating-point operations of one compiled train step (forward, backward,
  optimizer; 0.0 where the backend gives no cost analysis). Per image and per second it gives
  the model FLOPs from which an accelerator's utilization follows."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # noqa: BLE001 (backends without cost analysis)
    return 0.0
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get('flops', 0.0))


def peak_rss_mb() -> float:
  """This process's peak resident memory, in MB: Linux's VmHWM (it starts afresh at exec, where
  getrusage's ru_maxrss may carry a parent's), else ru_maxrss."""
  try:
    with open('/proc/self/status', encoding='ascii') as status:
      for line in status:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024  # kB
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_memory_mb(compiled) -> dict:
  """XLA's buffer sizes of a compiled step in MB ({} where the backend does not report them)."""
  try:
    memory = compiled.memory_analysis()
  except Exception:  # noqa: BLE001 (backends without memory analysis)
    return {}
  if memory is None:
    return {}
  return {'xla_temp_mb': memory.temp_size_in_bytes / 2**20,
          'xla_argument_mb': memory.argument_size_in_bytes / 2**20}


def measure(config, steps: int = 20, warmup: int = 3) -> dict:
  """Compiles and times the train step of `config` on synthetic device batches."""
  if steps < 1 or warmup < 0:
    raise ValueError(f'--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}')
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  total = config.total_steps or 1000
  method = runs.build_method(config, total)
  tx, schedule = param_groups.build(config.optim, config.batch_size, total, 10,
                                    getattr(method, 'optim_groups', tuple)())
  augment = None
  if config.data.on_device_photometric or config.data.augment.get('on_device', False):
    from jssl.train import loop  # pylint: disable=g-import-not-at-top
    augment = loop.device_augment(config.data)
  state = state_lib.create(method, tx, config.seed, sharding.replicated(mesh))
  batch = synthetic_batch(method, config.batch_size, mesh, config.seed, augment is not None)
  train_step = step_lib.make_train_step(method, tx, mesh, schedule, augment)
  t = time.perf_counter()
  compiled = train_step.lower(state, batch).compile()
  compile_s = time.perf_counter() - t
  flops = step_flops(compiled)
  memory = step_memory_mb(compiled)
  for _ in range(warmup):
    state, metrics = compiled(state, batch)
  jax.block_until_ready(state)
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    state, metrics = compiled(state, batch)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - t)
  step_s = statistics.median(times)
  device = jax.devices()[0]
  views = {k: shape for k, (shape, _) in method.input_spec().items() if k.startswith('view_')}
  return {
      'method': config.method.name, 'backbone': config.model.name,
      'batch_size': config.batch_size, 'image_size': views['view_0'][0] if views else None,
      'views': ' '.join(f'{k}:{s[0]}' for k, s in views.items()),
      'dtype': config.model.dtype, 'steps': steps, 'warmup': warmup,
      'images_per_s': config.batch_size / step_s, 'step_ms': 1000 * step_s,
      'step_ms_min': 1000 * min(times), 'compile_s': compile_s,
      'step_gflops_per_image': flops / config.batch_size / 1e9 if flops else None,
      'achieved_tflops': flops / step_s / 1e12 if flops else None,
      'loss': float(metrics['loss']),
      'peak_rss_mb': peak_rss_mb(), **memory,
      'device_kind': device.device_kind, 'platform': device.platform,
      'device_count': jax.device_count(),
  }


def run_reference(name: str, **kwargs) -> dict:
  """Runs benchmarks/<name>.py with `--key=value` for `kwargs` (True: `--key`, False: left
  out) in a fresh Python process and returns its JSON line (with its own peak_rss_mb).
  Raises RuntimeError with the end of its stderr when it fails (e.g. torch is not installed)."""
  path = os.path.join(_BENCHMARKS, f'{name}.py')
  if not os.path.exists(path):
    raise RuntimeError(f'{path} not found (the torch references live in the repository)')
  argv = [sys.executable, path]
  for key, value in kwargs.items():
    if value is True:
      argv.append(f'--{key}')
    elif value is not False:
      argv.append(f'--{key}={value}')
  proc = subprocess.run(argv, capture_output=True, text=True, check=False)
  lines = proc.stdout.strip().splitlines()
  if proc.returncode != 0 or not lines:
    tail = ' '.join(proc.stderr.strip().splitlines()[-3:])
    raise RuntimeError(f'{" ".join(argv[1:])} exited with {proc.returncode}: {tail}')
  return json.loads(lines[-1])


def torch_reference(config, steps: int, warmup: int) -> dict:
  """The matching plain-PyTorch step's timing (module docstring), or {'torch_error': why}."""
  image_size = int(config.data.augment.get('image_size', None)
                   or config.data.augment.get('global_size', None) or 32)
  vit = str(config.model.name).startswith('vit')
  common = dict(batch_size=config.batch_size, image_size=image_size, steps=steps, warmup=warmup)
  try:
    if vit:
      if config.method.name != 'mae':
        return {'torch_error': f'the ViT torch reference is MAE; this config trains '
                               f'{config.method.name}'}
      from jssl import models  # pylint: disable=g-import-not-at-top
      enc, m = models.from_config(config.model), config.method
      out = run_reference('torch_reference_vit', **common, patch=enc.patch_size,
                          width=enc.width, depth=enc.depth, heads=enc.num_heads,
                          dec_width=int(m.decoder_width), dec_depth=int(m.decoder_depth),
                          dec_heads=int(m.decoder_num_heads), mask_ratio=float(m.mask_ratio),
                          norm_pix_loss=int(bool(m.norm_pix_loss)))
      return {f'torch_{k}': v for k, v in out.items()}
    if config.method.name != 'simclr' or config.model.name != 'resnet18':
      print('note: the ResNet torch reference is ResNet-18 SimCLR; this config differs',
            file=sys.stderr)
    layouts = {cl: run_reference('torch_reference', **common, channels_last=cl)
               for cl in (False, True)}
  except RuntimeError as e:
    return {'torch_error': f'the torch reference failed: {e}'}
  best = min(layouts.values(), key=lambda r: r['step_ms'])
  out = {f'torch_{k}': v for k, v in best.items()}
  for cl, name in ((False, 'contiguous'), (True, 'channels_last')):
    out[f'torch_{name}_images_per_s'] = layouts[cl]['images_per_s']
    out[f'torch_{name}_peak_rss_mb'] = layouts[cl]['peak_rss_mb']
  return out


def run(argv) -> dict:
  """Parses `argv` (argv[0] the program name), measures, prints the JSON line."""
  fv = flags.FlagValues()
  config_flag = config_flags.DEFINE_config_file(
      'config', None, 'Config file and preset, e.g. configs/simclr.py:cifar10.', flag_values=fv,
      lock_config=True, sys_argv=list(argv))
  steps = flags.DEFINE_integer('steps', 20, 'Timed steps.', flag_values=fv)
  warmup = flags.DEFINE_integer('warmup', 3, 'Untimed steps after compilation.', flag_values=fv)
  torch_flag = flags.DEFINE_boolean('torch_reference', False,
                                    'Also time the plain PyTorch step.', flag_values=fv)
  rest = fv(list(argv))
  if len(rest) > 1:
    sys.exit(f'unexpected arguments: {" ".join(rest[1:])}')
  if config_flag.value is None:
    sys.exit('--config is required, e.g. --config configs/simclr.py:cifar10')
  config = config_flag.value
  result = measure(config, steps.value, warmup.value)
  if torch_flag.value:
    ref = torch_reference(config, max(min(steps.value, 5), 1), max(min(warmup.value, 1), 0))
    result.update(ref)
    if 'torch_images_per_s' in ref:
      result['jax_over_torch'] = result['images_per_s'] / ref['torch_images_per_s']
  print(json.dumps(result), flush=True)
  return result


def main(argv) -> None:
  run(argv)


if __name__ == '__main__':
  main(sys.argv)
