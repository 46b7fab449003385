"""The jssl trainer's command line.

  python -m jssl.main --config configs/simclr.py:cifar10 --workdir runs/x [--config.optim.lr=0.5]

`--config FILE[:PRESET]` is an ml_collections config file (default: the repository's
configs/simclr.py, preset 'tiny'); `--config.KEY=VALUE` overrides any key (an unknown key or a
value of the wrong type fails before training, naming the key; enumerated values are checked
by jssl.train.validate). `--workdir` defaults to runs/<method>-<preset>. Rerunning the same
command resumes from the newest checkpoint in the workdir. Progress goes to stderr; the last
stdout line is one JSON object with the final figures (step, loss, knn_top1 when the dataset
has labels, linear_top1 when the probe runs). Exit status: 0 done (or stopped by SIGTERM
after saving), 1 non-finite loss/gradients, 2 bad config.
"""

import json
import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               'configs', 'simclr.py')

_CONFIG = config_flags.DEFINE_config_file(
    'config', _DEFAULT_CONFIG if os.path.exists(_DEFAULT_CONFIG) else None,
    'Config file and preset, e.g. configs/simclr.py:cifar10.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory (default runs/<method>-<preset>).')


def parse_flags(argv):
  """absl's flag parsing, with a one-line error for a bad --config override (exit status 2)."""
  try:
    return flags.FLAGS(argv)
  except (flags.Error, AttributeError, KeyError, TypeError, ValueError) as e:
    message = ' '.join(str(e).replace('\\n', ' ').replace("\\'", "'").split())
    if len(message) > 1 and message[0] == message[-1] and message[0] in '"\'':
      message = message[1:-1]
    key = re.match(r"'([\w.]+)'", message)
    args = [a for a in argv[1:] if key and re.search(rf'\.{re.escape(key.group(1))}(=|$)', a)]
    where = f' (in {" ".join(args)})' if args else ''
    print(f'error: bad command line{where}: {message}', file=sys.stderr)
    sys.exit(2)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
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
  from jssl.train import loop  # pylint: disable=g-import-not-at-top (imports TensorFlow)
  try:
    result = loop.train(config, workdir)
  except loop.NonFiniteError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  result['workdir'] = workdir
  print(json.dumps(result), flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
