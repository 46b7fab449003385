"""Fine-tune a pre-trained backbone end to end on a labelled budget (MIM's yardstick).

  python -m jssl.finetune --config finetune --workdir runs/ft-mae \
      --config.pretrain_workdir=runs/mae-tiny [--config.labels_per_class=100] [--from_scratch]

`--config FILE[:PRESET]` or a shipped config by name (default: finetune, preset 'cifar') and
`--config.KEY=VALUE` overrides as in jssl.main; `--from_scratch` (same as
--config.from_scratch=True) trains the pre-training run's architecture from random init instead,
for the comparison. What it does: jssl.train.finetune. Rerunning the same command resumes from
the workdir's newest checkpoint. Progress goes to stderr; the last stdout line is one JSON
object (top1, from_scratch, pretrain_workdir, labels_per_class, steps, seconds...). Exit status
2 on a user error (bad config, missing run or data, a workdir in use or holding another run),
1 on non-finite loss or a failed write, each as one `error:` line.
"""

import json
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jssl import config_files

_CONFIG = config_flags.DEFINE_config_file(
    'config', config_files.resolve('finetune'),
    'Config file and preset (configs/finetune.py:imagenet), or a shipped config by name '
    '(finetune:imagenet).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output folder (checkpoints, metrics.jsonl, '
                                'curves.png, final.json); none: nothing is written.')
_FROM_SCRATCH = flags.DEFINE_bool('from_scratch', None,
                                  'Random init of the same architecture (default: config).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a file size limit fails the write instead
  config = _CONFIG.value
  if _FROM_SCRATCH.value is not None:
    with config.unlocked():
      config.from_scratch = bool(_FROM_SCRATCH.value)
  # pylint: disable=g-import-not-at-top
  from jssl.train import checkpoint, finetune, loop, sharding
  from jssl.train import workdir as workdir_lib
  from jssl.data import config as data_config
  log = lambda msg: print(f'[jssl.finetune] {msg}', file=sys.stderr, flush=True)  # noqa: E731
  try:
    result = finetune.finetune(config, _WORKDIR.value, log=log)
  except (ValueError, FileNotFoundError, workdir_lib.WorkdirError, data_config.DataError,
          sharding.BatchSizeError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except (loop.NonFiniteError, checkpoint.UnreadableCheckpointError,
          checkpoint.WriteFailedError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  if _WORKDIR.value:
    result['workdir'] = _WORKDIR.value
  print(json.dumps(result, allow_nan=False), flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=config_files.parse_flags)
