"""The `config.data` block: defaults and validation (no TensorFlow needed)."""

import ml_collections
from ml_collections import config_dict

class DataError(ValueError):
  """The data a config names cannot be read (a user error: one line says what and where)."""


class DataNotFoundError(DataError, FileNotFoundError):
  """The folder, records or dataset a config names does not exist."""


SCHEMES = ('embedded', 'synthetic', 'tfds', 'folder', 'records')
CORRUPT_MODES = ('skip', 'fail')


def data_config() -> ml_collections.ConfigDict:
  """Returns the default data block; the engine's configs fill `augment` per recipe."""
  return ml_collections.ConfigDict({
      # 'embedded' | 'synthetic' | 'tfds:NAME' | 'folder:PATH' | 'records:DIR'
      'source': 'embedded',
      'eval_source': 'embedded',
      'train_split': 'train',
      'eval_split': 'test',
      'data_dir': config_dict.placeholder(str),  # TFDS data_dir
      'recipe': 'simclr_cifar',
      'augment': ml_collections.ConfigDict(),  # params of `recipe` (augment.recipe_defaults)
      'eval_recipe': 'eval',
      'eval_augment': ml_collections.ConfigDict(),  # params of `eval_recipe` ({} = defaults)
      'image_size': 32,  # raw-pixel kNN resize; the recipes carry their own crop sizes
      'corrupt': 'skip',  # 'skip': count, report the path and use another image; 'fail': raise
      'on_device_photometric': False,
      'synthetic': {'image_size': 224, 'num_examples': 10000, 'num_classes': 10},
      'prefetch': 2,
      'num_parallel_calls': -1,  # -1 = tf.data.AUTOTUNE
  })


def scheme_of(source: str) -> str:
  """'folder:/x' -> 'folder'; raises ValueError naming the source for an unknown scheme."""
  if not isinstance(source, str) or not source:
    raise ValueError(f'data source must be a non-empty string, got {source!r}')
  scheme = source.split(':', 1)[0]
  if scheme not in SCHEMES:
    raise ValueError(f'unknown data source scheme {scheme!r} in {source!r}; '
                     f'expected one of {", ".join(SCHEMES)} (e.g. tfds:cifar10, folder:/data/x)')
  if scheme in ('tfds', 'folder', 'records') and not source[len(scheme) + 1:]:
    raise ValueError(f'data source {source!r} needs a name or path after "{scheme}:"')
  return scheme


def validate_data_config(cfg: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the `data.*` key at fault."""
  for key in ('source', 'eval_source'):
    try:
      scheme_of(cfg[key])
    except ValueError as e:
      raise ValueError(f'config data.{key}: {e}') from None
  if cfg.corrupt not in CORRUPT_MODES:
    raise ValueError(f'config data.corrupt={cfg.corrupt!r}: expected one of {CORRUPT_MODES}')
  for key in ('image_size', 'prefetch'):
    if not isinstance(cfg[key], int) or cfg[key] < (1 if key == 'image_size' else 0):
      raise ValueError(f'config data.{key}={cfg[key]!r}: expected a positive integer')
  if not isinstance(cfg.num_parallel_calls, int) or (
      cfg.num_parallel_calls < 1 and cfg.num_parallel_calls != -1):
    raise ValueError(f'config data.num_parallel_calls={cfg.num_parallel_calls!r}: '
                     'expected -1 (AUTOTUNE) or a positive integer')
  for key in ('image_size', 'num_examples', 'num_classes'):
    value = cfg.synthetic[key]
    if not isinstance(value, int) or value < 1:
      raise ValueError(f'config data.synthetic.{key}={value!r}: expected a positive integer')
  for key in ('train_split', 'eval_split', 'recipe', 'eval_recipe'):
    if not isinstance(cfg[key], str) or not cfg[key]:
      raise ValueError(f'config data.{key}={cfg[key]!r}: expected a non-empty string')
