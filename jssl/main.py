"""The jssl trainer's command line.

  python -m jssl.main --config configs/simclr.py:cifar10 --workdir runs/x [--config.optim.lr=0.5]

`--config FILE[:PRESET]` is an ml_collections config file, or the name of a shipped one
(`--config simclr:cifar10`; default: simclr, preset 'tiny'); `--config.KEY=VALUE` overrides
any key (an unknown key or a value of the wrong type fails before training, naming the key;
enumerated values are checked by jssl.train.validate). `--workdir` defaults to runs/<method>-<preset>. Rerunning the same
command resumes from the newest checkpoint in the workdir. Progress goes to stderr; the last
stdout line is one JSON object with the final figures (step, loss, knn_top1 when the dataset
has labels, linear_top1 when the probe runs). Exit status: 0 done (or stopped by SIGTERM
after saving), 1 non-finite loss/gradients, no readable checkpoint, or a checkpoint or log
that could not be written (the newest complete checkpoint stays), 2 a user error (bad
config, missing or unreadable data, a workdir that cannot be written, is in use or holds
another run), each as one `error:` line.

Multi-process (one process per host or per GPU, all running this same command): give
`--coordinator HOST:PORT --num_processes N --process_id I`, or `--coordinator auto` on a TPU pod
(JAX finds the rest); inside a multi-task SLURM step nothing is needed (see jssl.distributed and
launch/). Only process 0 prints progress and the JSON line and writes logs and plots; every
process takes part in the collective checkpoint writes.
"""

import json
import os
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from jssl import config_files

_CONFIG = config_flags.DEFINE_config_file(
    'config', config_files.resolve('simclr'),
    'Config file and preset (configs/simclr.py:cifar10), or a shipped config by name '
    '(simclr:cifar10).', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (default runs/<method>-<preset>); '
                                'a gs:// path works (orbax, tf.io.gfile).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator', None, 'Multi-process runs: HOST:PORT of process 0 (the same on every '
    "process), or 'auto' to let JAX detect a TPU pod / SLURM / Open MPI environment.")
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Multi-process runs: the number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'Multi-process runs: this process, in [0, num_processes).')
_LOCAL_DEVICE_IDS = flags.DEFINE_list(
    'local_device_ids', None, 'Multi-process runs: the local accelerators this process uses '
    '(e.g. 0 for one process per GPU; default all).')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
  # A file size limit (RLIMIT_FSIZE) then fails the write (EFBIG) instead of killing the run.
  signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
  from jssl import distributed  # pylint: disable=g-import-not-at-top
  try:  # before anything touches a JAX backend
    setup = distributed.detect(os.environ, coordinator=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value,
                               local_device_ids=_LOCAL_DEVICE_IDS.value)
  except ValueError as e:
    print(f'error: bad command line: {e}', file=sys.stderr)
    sys.exit(2)
  distributed.initialize(setup)
  config = _CONFIG.value
  if config is None:
    raise app.UsageError('--config is required, e.g. --config configs/simclr.py:tiny')
  from jssl.train import validate  # pylint: disable=g-import-not-at-top
  try:
    validate.validate(config)
  except ValueError as e:
    print(f'error: bad config: {e}', file=sys.stderr)
    sys.exit(2)
  workdir = _WORKDIR.value or os.path.join(
      'runs', f'{config.method.name}-{config.get("preset", None) or "custom"}')
  from jssl.train import checkpoint, loop, sharding  # pylint: disable=g-import-not-at-top
  from jssl.data import config as data_config  # pylint: disable=g-import-not-at-top
  from jssl.train import workdir as workdir_lib  # pylint: disable=g-import-not-at-top
  try:
    result = loop.train(config, workdir)
  except (workdir_lib.WorkdirError, data_config.DataError, sharding.BatchSizeError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except (loop.NonFiniteError, checkpoint.UnreadableCheckpointError,
          checkpoint.WriteFailedError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  result['workdir'] = workdir
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    print(json.dumps(loop.strict_json(result), allow_nan=False), flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=config_files.parse_flags)
