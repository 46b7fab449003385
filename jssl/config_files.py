"""Config files loading their neighbours: `sibling(__file__, 'common')` in configs/*.py.

ml_collections loads a config file by path, not as part of a package, so a config that builds
on another file of its folder (every method on configs/common.py; SimMIM and BEiT on mae.py)
loads it by path too. Pure Python: no JAX, no TensorFlow.
"""

import importlib.util
import os
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
