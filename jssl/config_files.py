"""Config files loading their neighbours: `sibling(__file__, 'common')` in configs/*.py.

ml_collections loads a config file by path, not as part of a package, so a config that builds
on another file of its folder (every method on configs/common.py; SimMIM and BEiT on mae.py)
loads it by path too. Pure Python: no JAX, no TensorFlow.

Also the command lines' `--config` handling: `resolve(value)` (a shipped config by name),
`resolve_args(argv)`, and `parse_flags(argv)`, absl's flag parsing with one `error:` line
(exit status 2) for a bad --config or override (jssl.main, jssl.finetune).
"""

import importlib.util
import os
import re
import sys
import types


def sibling(config_file: str, name: str) -> types.ModuleType:
  """The module of `<folder of config_file>/<name>.py`, freshly executed."""
  path = os.path.join(os.path.dirname(os.path.abspath(config_file)), f'{name}.py')
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{config_file} needs {path}, which does not exist')
  spec = importlib.util.spec_from_file_location(f'jssl_configs_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def configs_dir() -> str:
  """The folder of the shipped configs: the checkout's configs/ (next to the jssl package), or
  the installed copy (jssl/configs, which `pip install .` makes of it)."""
  package = os.path.dirname(os.path.abspath(__file__))
  for folder in (os.path.join(os.path.dirname(package), 'configs'),
                 os.path.join(package, 'configs')):
    if os.path.isfile(os.path.join(folder, 'common.py')):
      return folder
  raise FileNotFoundError(f'no configs/ folder next to {package} nor inside it: reinstall jssl')


def shipped_names() -> list[str]:
  """The method config names shipped with jssl ('simclr', 'byol', ...)."""
  return sorted(f[:-3] for f in os.listdir(configs_dir())
                if f.endswith('.py') and f not in ('common.py', '__init__.py'))


def resolve(value: str) -> str:
  """A `--config` value as a file path: `FILE[:PRESET]` stays as it is when FILE exists; a
  shipped config's name (`simclr`, `simclr.py`, `simclr:cifar10`) becomes its path. Raises
  FileNotFoundError naming the value and the shipped names."""
  path, sep, preset = value.partition(':')
  if os.path.isfile(path):
    return value
  name = os.path.basename(path)[:-3] if path.endswith('.py') else path
  if os.sep not in path and name in shipped_names():
    return os.path.join(configs_dir(), f'{name}.py') + sep + preset
  raise FileNotFoundError(f'config file not found: {path!r} (a path, or one of the shipped '
                          f'configs: {", ".join(shipped_names())})')


def check(value: str) -> None:
  """Loads `FILE[:PRESET]` once: raises ValueError for an unknown preset (the config's own
  message lists its presets) or a config file that fails to load, naming the file."""
  path, _, preset = value.partition(':')
  spec = importlib.util.spec_from_file_location('jssl_config_check', path)
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except Exception as e:  # noqa: BLE001 (any error of a user's file, reported in one line)
    raise ValueError(f'{path}: {type(e).__name__}: {e}') from None
  if not hasattr(module, 'get_config'):
    raise ValueError(f'{path} has no get_config(); is it a jssl config file?')
  module.get_config(preset or None)


class ConfigFileError(ValueError):
  """A `--config` value that names no config file or an unknown preset."""


def resolve_args(argv: list) -> list:
  """`argv` with each `--config VALUE` / `--config=VALUE` resolved (`resolve`) and checked
  (`check`); raises ConfigFileError('bad --config VALUE: why')."""
  out = list(argv)
  for i, arg in enumerate(out):
    flag, eq, value = arg.partition('=')
    if flag not in ('--config', '-config'):
      continue
    if not eq:
      if i + 1 >= len(out):
        continue
      value = out[i + 1]
    try:
      resolved = resolve(value)
      check(resolved)
    except (FileNotFoundError, ValueError) as e:
      raise ConfigFileError(f'bad --config {value}: {e}') from None
    if eq:
      out[i] = f'{flag}={resolved}'
    else:
      out[i + 1] = resolved
  return out


def parse_flags(argv):
  """absl's flag parsing, with a one-line error for a bad --config or override (exit status 2)."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  try:
    argv = resolve_args(argv)
  except ConfigFileError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
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
