"""`python -m jssl.bench {input,step} [flags]`: dispatches to jssl.bench.<command>.

The command's module is imported only when chosen, so `input` works without `step`.
"""

import importlib
import sys

COMMANDS = ('input', 'step')
USAGE = f'usage: python -m jssl.bench {{{",".join(COMMANDS)}}} [--flags]'


def main(argv: list[str]) -> None:
  if len(argv) < 2 or argv[1] not in COMMANDS:
    got = repr(argv[1]) if len(argv) > 1 else 'nothing'
    sys.exit(f'{USAGE}\nunknown benchmark command {got}; expected one of {", ".join(COMMANDS)}')
  module = importlib.import_module(f'jssl.bench.{argv[1]}')
  rest = [f'{argv[0]} {argv[1]}'] + argv[2:]
  if hasattr(module, 'run'):
    module.run(rest)
  else:
    from absl import app  # pylint: disable=g-import-not-at-top
    app.run(module.main, argv=rest)


if __name__ == '__main__':
  main(sys.argv)
