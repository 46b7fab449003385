"""Config validation before any work: every error names the `config.` key at fault.

`validate(config)` checks the enumerated values (method, backbone, stem, dtype, optimizer,
schedule, lr scaling), the numbers that must be positive, the data block (jssl.data's own
checks, and the recipe's parameters) and raises ValueError on the first problem.
"""

from jssl import methods, models
from jssl.models import vit
from jssl.train import optim

STEMS = ('cifar', 'imagenet')
BACKBONES = tuple(models.STAGES) + tuple(vit.VIT_CONFIGS) + ('dvae',)  # dvae: BEiT's tokenizer


def _choice(config, key: str, choices) -> None:
  value = config
  for part in key.split('.'):
    value = value[part]
  if value not in choices:
    raise ValueError(f'config.{key}={value!r} is not one of {sorted(choices)}')


def _positive(config, key: str, allow_zero: bool = False) -> None:
  value = config
  for part in key.split('.'):
    value = value[part]
  ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (
      value >= 0 if allow_zero else value > 0)
  if not ok:
    raise ValueError(f'config.{key}={value!r} must be a {"non-negative" if allow_zero else "positive"}'
                     ' number')


def validate(config) -> None:
  """Raises ValueError naming the first bad key of `config`."""
  _choice(config, 'method.name', methods.REGISTRY)
  _choice(config, 'model.name', BACKBONES)
  if config.model.name in models.STAGES:
    _choice(config, 'model.stem', STEMS)
    _positive(config, 'model.width')
  _choice(config, 'model.dtype', models.DTYPES)
  _choice(config, 'optim.name', optim.NAMES)
  _choice(config, 'optim.lr_scaling', optim.SCALINGS)
  _choice(config, 'optim.schedule', optim.SCHEDULES)
  for key in ('batch_size', 'optim.lr', 'checkpoint.every_steps',
              'checkpoint.keep', 'log.every_steps'):
    _positive(config, key)
  for key in ('total_epochs', 'total_steps', 'steps_per_epoch', 'optim.weight_decay',
              'optim.warmup_epochs', 'optim.clip_norm', 'eval.every_epochs'):
    _positive(config, key, allow_zero=True)
  if not isinstance(config.batch_size, int):
    raise ValueError(f'config.batch_size={config.batch_size!r} must be an integer')
  if not (config.total_steps or config.total_epochs):
    raise ValueError('config.total_epochs or config.total_steps must be > 0')
  if config.method.name == 'byol' and not 0 <= config.method.tau_base <= 1:
    raise ValueError(f'config.method.tau_base={config.method.tau_base!r} must be in [0, 1]')
  from jssl.data import augment_recipes  # pylint: disable=g-import-not-at-top (no TensorFlow)
  from jssl.data import config as data_config  # pylint: disable=g-import-not-at-top
  data_config.validate_data_config(config.data)
  for recipe, params in ((config.data.recipe, config.data.augment),
                         (config.data.eval_recipe, config.data.eval_augment)):
    try:
      augment_recipes.resolve(recipe, params.to_dict())
    except ValueError as e:
      raise ValueError(f'config.data recipe {recipe!r}: {e}') from None
