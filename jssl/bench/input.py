"""Host input pipeline throughput: `python -m jssl.bench input --config PATH[:preset]`.

    python -m jssl.bench input --config configs/simclr.py:cifar10 [--config.data.x=y]
        [--steps 50] [--warmup 5]

The config needs top-level `batch_size`, `seed` and a `data` block (`jssl.data.config`).
images_per_s counts source images turned into their full set of views per second, on this
process, after `warmup` batches. The last stdout line is one JSON object.
"""

import json
import os
import sys
import time

from jssl.data import pipeline


def host_cores() -> int:
  """CPU cores this process may run on (the affinity mask, else os.cpu_count())."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:
    return os.cpu_count() or 1


def measure(config, steps: int = 20, warmup: int = 3) -> dict:
  """Times `steps` batches of the training pipeline of `config` after `warmup` batches."""
  if steps < 1 or warmup < 0:
    raise ValueError(f'--steps must be >= 1 and --warmup >= 0, got {steps} and {warmup}')
  it = pipeline.train_iterator(config.data, config.batch_size, config.seed)
  batch = next(it)
  for _ in range(warmup):
    batch = next(it)
  start = time.perf_counter()
  for _ in range(steps):
    batch = next(it)
  elapsed = time.perf_counter() - start
  return {
      'images_per_s': round(steps * config.batch_size / elapsed, 2),
      'views_per_image': sum(k.startswith('view_') for k in batch),
      'batch_size': config.batch_size,
      'recipe': config.data.recipe,
      'source': config.data.source,
      'host_cores': host_cores(),
  }


def run(argv: list[str]) -> None:
  """Parses `argv` (program name first) into its own flag set and prints the result."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  fv = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'config file[:preset]', flag_values=fv,
                                  lock_config=True, sys_argv=list(argv))
  flags.DEFINE_integer('steps', 20, 'timed batches', flag_values=fv)
  flags.DEFINE_integer('warmup', 3, 'untimed batches before timing', flag_values=fv)
  try:
    fv(argv)
  except flags.Error as e:
    sys.exit(f'{e}\n{__doc__.strip().splitlines()[0]}')
  if fv.config is None:
    sys.exit('--config is required (a config file with batch_size, seed and data)')
  print(json.dumps(measure(fv.config, fv.steps, fv.warmup)), flush=True)


if __name__ == '__main__':
  run(sys.argv)
