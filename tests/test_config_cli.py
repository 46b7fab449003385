"""Configs and the command lines: presets, fail-fast errors, the step benchmark without TF."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from jssl.train import validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='', TF_CPP_MIN_LOG_LEVEL='3')


def load(method):
  spec = importlib.util.spec_from_file_location(f'cfg_{method}',
                                                os.path.join(ROOT, 'configs', f'{method}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config


METHOD_CONFIGS = ('simclr', 'byol', 'nnclr', 'mean_shift', 'moco_v2', 'moco_v3', 'simsiam', 'dino',
                  'vicreg', 'barlow_twins', 'swav', 'mae', 'simmim', 'dvae', 'beit', 'ibot',
                  'dinov2', 'ijepa')


@pytest.mark.parametrize('method', METHOD_CONFIGS)
@pytest.mark.parametrize('preset', [None, 'tiny', 'cifar10', 'imagenet'])
def test_presets_are_valid(method, preset):
  config = load(method)(preset)
  validate.validate(config)
  assert config.method.name == method and config.preset == (preset or 'tiny')


def test_every_method_config_is_tested():
  names = {f[:-3] for f in os.listdir(os.path.join(ROOT, 'configs'))
           if f.endswith('.py') and f not in ('common.py', 'finetune.py', '__init__.py')}
  assert names == set(METHOD_CONFIGS)
  with pytest.raises(ValueError, match="unknown preset 'nope'"):
    load('vicreg')('nope')


def test_preset_hyper_parameters():
  s, b = load('simclr')('cifar10'), load('byol')('cifar10')
  assert (s.model.name, s.model.stem, s.batch_size, s.total_epochs) == ('resnet18', 'cifar',
                                                                       512, 1000)
  assert (s.optim.name, s.optim.lr, s.optim.lr_scaling, s.optim.weight_decay) == (
      'lars', 0.4, 'linear', 1e-5)
  assert s.method.temperature == 0.2 and tuple(s.method.proj_hidden_dims) == (2048,)
  assert s.method.proj_dim == 256 and s.optim.warmup_epochs == 10
  # solo-learn's LARS: eta 0.02, clip_lr; the 30-minute CPU preset keeps optax's plain LARS.
  assert (s.optim.trust_coefficient, s.optim.trust_clip) == (0.02, True)
  assert (b.optim.trust_coefficient, b.optim.trust_clip) == (0.02, True)
  c30 = load('simclr')('cifar10_cpu')
  assert (c30.optim.trust_coefficient, c30.optim.trust_clip, c30.total_steps) == (1e-3, False, 3700)
  # 24 px training views, whole 32 px images for the kNN evaluation.
  assert (c30.data.augment.image_size, c30.data.eval_augment.image_size) == (24, 32)
  assert c30.method.temperature == 0.1 and tuple(c30.data.augment.scale) == (0.2, 1.0)
  b30 = load('byol')('cifar10_cpu')
  assert (b30.total_steps, b30.data.augment.image_size, b30.data.eval_augment.image_size) == (
      3200, 24, 32)
  assert b30.data.recipe == 'byol_cifar' and tuple(b30.data.augment.solarize_p) == (0.0, 0.2)
  assert (b.optim.lr, b.method.tau_base, tuple(b.method.proj_hidden_dims)) == (1.0, 0.99, (4096,))
  si, bi = load('simclr')('imagenet'), load('byol')('imagenet')
  assert (si.model.name, si.batch_size, si.optim.lr, si.optim.weight_decay) == (
      'resnet50', 4096, 0.3, 1e-6)
  assert si.method.temperature == 0.1 and si.data.augment.image_size == 224
  assert (bi.optim.lr, bi.optim.weight_decay, bi.method.tau_base, bi.total_epochs) == (
      0.2, 1.5e-6, 0.996, 300)
  # MSF: a weak target view (crop and flip only) beside the strong online view, as the paper.
  from jssl.data import augment_recipes  # pylint: disable=g-import-not-at-top (no TensorFlow)
  msf = load('mean_shift')('imagenet')
  views, _ = augment_recipes.plan(msf.data.recipe, msf.data.augment.to_dict())
  assert not msf.method.symmetric and tuple(msf.data.augment.photometric) == (True, False)
  assert views[1].photometric.is_identity and views[0].photometric.blur_p == 0.5
  assert tuple(load('mean_shift')('cifar10_cpu').data.augment.photometric) == (True, True)
  with pytest.raises(ValueError, match='preset'):
    load('simclr')('huge')


def test_validate_names_the_bad_key():
  config = load('simclr')()
  config.model.stem = 'vit'
  with pytest.raises(ValueError, match='config.model.stem'):
    validate.validate(config)
  config = load('simclr')()
  config.data.augment.scale = (0.5, 0.1)
  with pytest.raises(ValueError, match='scale'):
    validate.validate(config)


def _main(*args, cwd):
  return subprocess.run([sys.executable, '-m', 'jssl.main', *args], cwd=cwd, env=ENV,
                        capture_output=True, text=True, timeout=300)


def test_cli_bad_key_and_bad_value_fail_fast(tmp_path):
  config = os.path.join(ROOT, 'configs', 'simclr.py')
  workdir = str(tmp_path / 'run')
  bad_key = _main('--config', config, '--workdir', workdir, '--config.optim.lrr=1', cwd=tmp_path)
  assert bad_key.returncode == 2, bad_key.stderr
  assert '--config.optim.lrr=1' in bad_key.stderr and 'lrr' in bad_key.stderr
  bad_enum = _main('--config', f'{config}:cifar10', '--workdir', workdir,
                   '--config.optim.name=adam', cwd=tmp_path)
  assert bad_enum.returncode == 2 and 'config.optim.name' in bad_enum.stderr
  assert not os.path.exists(workdir)  # nothing started


def test_bench_step_runs_without_tensorflow(tmp_path):
  code = (
      'import json, sys\n'
      'from jssl.bench import step\n'
      f'r = step.run(["bench", "--config={ROOT}/configs/byol.py", "--steps=2", "--warmup=1",\n'
      '    "--config.batch_size=8", "--config.model.width=4", "--config.model.stage_sizes=(1,)",\n'
      '    "--config.method.proj_hidden_dims=(16,)", "--config.method.pred_hidden_dims=(16,)",\n'
      '    "--config.data.augment.image_size=8"])\n'
      'print(json.dumps({"tf": "tensorflow" in sys.modules}))\n')
  out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=ENV, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  lines = out.stdout.strip().splitlines()
  result, tf = json.loads(lines[-2]), json.loads(lines[-1])
  assert tf == {'tf': False}
  for key in ('images_per_s', 'step_ms', 'compile_s', 'peak_rss_mb', 'device_kind',
              'device_count'):
    assert key in result
  assert result['images_per_s'] > 0 and result['method'] == 'byol'
  # XLA's FLOP count: more than the two views' forward convolutions alone (8 * 8 * 8 pixels
  # x 3 x 3 x 3 x 4 multiply-adds in the first conv of each view)
  assert result['step_gflops_per_image'] * 1e9 > 2 * 2 * 8 * 8 * 27 * 4
  assert result['views'] == 'view_0:8 view_1:8'


@pytest.mark.slow
def test_main_end_to_end_prints_final_json(tmp_path):
  config = os.path.join(ROOT, 'configs', 'simclr.py')
  out = _main('--config', config, '--workdir', str(tmp_path / 'run'),
              '--config.data.source=synthetic', '--config.data.eval_source=synthetic',
              '--config.data.synthetic.image_size=12', '--config.data.synthetic.num_examples=64',
              '--config.data.synthetic.num_classes=4', '--config.data.image_size=8',
              '--config.data.augment.image_size=8', '--config.data.eval_augment.image_size=8',
              '--config.model.width=4', '--config.model.stage_sizes=(1,)',
              '--config.batch_size=16', '--config.total_steps=4', '--config.eval.batch_size=16',
              '--config.log.tensorboard=False', cwd=tmp_path)
  assert out.returncode == 0, out.stderr
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result['step'] == 4 and 0 <= result['knn_top1'] <= 1 and 'loss' in result
  assert os.path.exists(tmp_path / 'run' / 'curves.png')
