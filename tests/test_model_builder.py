"""jssl.models.build: every `config.model` key of every preset of every config reaches what is
built (change the key, and the built method changes), and the one image-size rule."""

import importlib.util
import pathlib
import re

import ml_collections
import pytest

from jssl import methods, models

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.stem for p in (ROOT / 'configs').glob('*.py')
                 if p.stem not in ('common', 'finetune', '__init__'))


def _module(name):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}', ROOT / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _presets(name):
  """The presets a config's get_config accepts (the names its error message lists)."""
  module = _module(name)
  try:
    module.get_config('no-such-preset')
  except ValueError as e:
    return module, re.findall(r"'([a-z0-9_]+)'", str(e).split('choose', 1)[1])
  raise AssertionError(f'configs/{name}.py accepts an unknown preset')


CASES = [(name, preset) for name in CONFIGS for preset in _presets(name)[1]]
_NAMES = {'resnet_tiny': 'resnet18', 'resnet18': 'resnet34', 'resnet34': 'resnet18',
          'resnet50': 'resnet101', 'vit_tiny': 'vit_small', 'vit_small': 'vit_base',
          'vit_base': 'vit_small'}


def _changed(key, value, model):
  """Another valid value for `config.model.KEY`, or None when there is none to try (a ViT's
  name when width, depth and num_heads all override it)."""
  if key == 'name':
    overridden = all(model.get(k, 0) for k in ('width', 'depth', 'num_heads'))
    return None if value.startswith('vit') and overridden else _NAMES.get(value)
  if key == 'stem':
    return 'imagenet' if value == 'cifar' else 'cifar'
  if key == 'dtype':
    return 'bfloat16' if value == 'float32' else 'float32'
  if key == 'conv_weight_grad':
    return 'per_tap' if value == 'xla' else 'xla'
  if key == 'pool':
    return 'mean' if value == 'cls' else 'cls'
  if key == 'attention_impl':
    return 'cudnn' if not value else ''
  if key == 'stage_sizes':
    return (3, 3, 3, 3)
  if key in ('mean', 'std'):
    return tuple(v + 0.01 for v in value)
  if isinstance(value, bool):
    return not value
  if key == 'patch_size':
    return 8 if value != 8 else 4
  if isinstance(value, float):
    return value + 0.1
  if isinstance(value, int):
    return value + (8 if key in ('width', 'hidden') else 1)
  raise AssertionError(f'no alternative value for config.model.{key}={value!r}')


def _built(config):
  """What a config builds: the method (BEiT: its encoder and normalization, as BEiT itself also
  needs a trained tokenizer)."""
  if config.method.name == 'beit':
    return repr((models.from_config(config.model, use_mask_token=True), config.model.mean,
                 config.model.std, models.image_size(config)))
  return repr(methods.build(config, 1000, 100))


@pytest.mark.parametrize('name,preset', CASES)
def test_every_model_key_reaches_the_built_method(name, preset):
  module = _module(name)
  base = _built(module.get_config(preset))
  for key, value in module.get_config(preset).model.items():
    other = _changed(key, value, module.get_config(preset).model)
    if other is None:
      continue
    config = module.get_config(preset)
    config.model[key] = other
    try:
      changed = _built(config) != base
    except ValueError as e:  # refused by a consistency check that names it: it is read
      changed = f'config.model.{key}' in str(e)
    assert changed, f'configs/{name}.py:{preset}: config.model.{key} is ignored'


def test_image_size_rule():
  c = ml_collections.ConfigDict({'data': {'image_size': 32, 'augment': {'image_size': 24}}})
  assert models.image_size(c) == 24
  c = ml_collections.ConfigDict({'data': {'image_size': 32, 'augment': {'global_size': 96}}})
  assert models.image_size(c) == 96
  c = ml_collections.ConfigDict({'data': {'image_size': 40, 'augment': {}}})
  assert models.image_size(c) == 40
  assert models.image_size(ml_collections.ConfigDict({'model': {}})) == 32


def test_bad_dtype_names_the_key():
  c = _module('simclr').get_config('tiny')
  c.model.dtype = 'float16'
  with pytest.raises(ValueError, match='config.model.dtype'):
    models.from_config(c.model)


@pytest.mark.parametrize('name,preset', CASES)
def test_every_vit_preset_trains_with_adamw(name, preset):
  """Every ViT recipe jssl follows (MAE, SimMIM, BEiT, DINO, iBOT, DINOv2, I-JEPA, MoCo v3's
  ViT) uses AdamW; the ResNets' LARS (common.cifar10 and cifar10_cpu set it) barely moves a
  ViT's weights at an AdamW learning rate, so a preset that builds on those and forgets to set
  its optimizer back trains nothing."""
  config = _module(name).get_config(preset)
  if config.model.get('name', '').startswith('vit'):
    assert config.optim.name == 'adamw', f'configs/{name}.py:{preset}: {config.optim.name}'
