"""Fine-tune a pre-trained backbone end to end on a labelled budget (MIM's yardstick).

  python -m jssl.finetune --config configs/finetune.py --workdir runs/ft-mae \
      --config.pretrain_workdir=runs/mae-tiny [--config.labels_per_class=100] [--from_scratch]

`--config FILE[:PRESET]` (default configs/finetune.py) and `--config.KEY=VALUE` overrides as in
jssl.main; `--from_scratch` (same as --config.from_scratch=True) trains the pre-training run's
architecture from random init instead, for the comparison. What it does: jssl.finetune_lib.
Progress goes to stderr; the last stdout line is one JSON object (top1, from_scratch,
pretrain_workdir, labels_per_class, steps, seconds...). Exit status 2 on a bad config.
"""

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               'configs', 'finetune.py')
_CONFIG = config_flags.DEFINE_config_file(
    'config', _DEFAULT_CONFIG if os.path.exists(_DEFAULT_CONFIG) else None,
    'Config file and preset, e.g. configs/finetune.py:imagenet.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (metrics.jsonl, final.json).')
_FROM_SCRATCH = flags.DEFINE_bool('from_scratch', None,
                                  'Random init of the same architecture (default: config).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('--config is required, e.g. --config configs/finetune.py')
  if _FROM_SCRATCH.value is not None:
    with config.unlocked():
      config.from_scratch = bool(_FROM_SCRATCH.value)
  from jssl import finetune_lib  # pylint: disable=g-import-not-at-top
  log = lambda msg: print(f'[jssl.finetune] {msg}', file=sys.stderr, flush=True)  # noqa: E731
  try:
    result = finetune_lib.run(config, _WORKDIR.value, log=log)
  except (ValueError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  if _WORKDIR.value:
    result['workdir'] = _WORKDIR.value
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  app.run(main)
