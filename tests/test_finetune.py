"""jssl.finetune: pre-trained vs from-scratch weights, layer-wise lr decay, the labelled budget,
and (slow) one short end-to-end run."""

import functools
import importlib.util
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl.data import augment_jax
from jssl.train import runs
from jssl.train import workdir as workdir_lib

from jssl.train import checkpoint, classifier, finetune, optim, sharding
from jssl.train import state as state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPTH = 2


def get_config(name, preset=None):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}',
                                                os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def mae_run_config():
  """configs/mae.py shrunk (2 blocks, width 32, patch 4, 16 px) on a small synthetic dataset."""
  c = get_config('mae')
  c.model.update(width=32, depth=DEPTH, num_heads=2, patch_size=4)
  c.method.update(decoder_width=16, decoder_depth=1, decoder_num_heads=2)
  c.data.augment.image_size = 16
  c.data.update(source='synthetic', eval_source='synthetic', image_size=16)
  c.data.synthetic.update(image_size=16, num_examples=64, num_classes=4)
  c.data.eval_augment.update(image_size=16, crop_pct=1.0)
  return c


def ft_config(workdir, from_scratch=False):
  c = get_config('finetune')
  c.update(pretrain_workdir=workdir, from_scratch=from_scratch, labels_per_class=4,
           batch_size=16, total_steps=2)
  c.eval.update(batch_size=16, every_epochs=0.0)
  c.log.update(every_steps=1, tensorboard=False)
  c.checkpoint.update(every_steps=1, use_async=False)
  c.optim.warmup_epochs = 0.0
  return c


def engine(config, run_config):
  """(method, tx, schedule, state, ...) of jssl.train.finetune.build at 16 px, 4 classes."""
  p = finetune.plan(config, 16)
  return finetune.build(config, run_config, 4, 16, 16, p, sharding.make_mesh())


@functools.lru_cache(maxsize=None)
def fresh_classifier():
  """(method, params, batch_stats) of the fine-tuning classifier at random init (seed 0)."""
  method, _, _, state, _, _ = engine(ft_config('', True), mae_run_config())
  return method, jax.device_get(state.params), jax.device_get(state.batch_stats)


@pytest.fixture(scope='module')
def pretrain_run(tmp_path_factory):
  """A pre-training run directory: config.json of the small MAE and a checkpoint whose encoder
  is the classifier's backbone shifted by 0.5 (plus a decoder leaf fine-tuning must ignore)."""
  workdir = str(tmp_path_factory.mktemp('mae_run'))
  _, params, _ = fresh_classifier()
  encoder = jax.tree.map(lambda p: np.asarray(p) + 0.5, params['backbone'])
  run_params = {'encoder': encoder, 'decoder': {'pred': {'kernel': np.ones((16, 48), np.float32)}}}
  state = state_lib.TrainState(step=np.asarray(7, np.int32), params=run_params, batch_stats={},
                               opt_state={}, method_state={},
                               rng=np.asarray(jax.random.PRNGKey(0)))
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(mae_run_config().to_json_best_effort(indent=2))
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), use_async=False)
  ckpt.save(jax.device_put(state), force=True)
  ckpt.close()
  return workdir, encoder


def test_pretrained_vs_from_scratch_weights(pretrain_run):
  workdir, encoder = pretrain_run
  arrays = runs.restore_arrays(workdir)
  assert arrays['step'] == 7
  run_config = runs.read_config(workdir)
  assert run_config.model.depth == DEPTH and run_config.method.name == 'mae'
  _, fresh, stats = fresh_classifier()
  params, _ = classifier.load_pretrained(fresh, stats, arrays, workdir)
  jax.tree.map(np.testing.assert_array_equal, params['backbone'], encoder)  # the checkpoint's
  jax.tree.map(np.testing.assert_array_equal, params['head'], fresh['head'])  # a new head
  diff = jax.tree.map(lambda a, b: float(np.abs(np.asarray(a) - b).max()), fresh['backbone'],
                      encoder)
  assert min(jax.tree.leaves(diff)) == pytest.approx(0.5)  # random init of the same net
  # a checkpoint missing a backbone leaf is refused, naming it
  broken = dict(arrays, params={'encoder': {k: v for k, v in arrays['params']['encoder'].items()
                                            if k != 'block1'}})
  with pytest.raises(ValueError, match='block1'):
    classifier.load_pretrained(fresh, stats, broken, workdir)
  with pytest.raises(ValueError, match='expected "encoder" or "backbone"'):
    classifier.load_pretrained(fresh, stats, dict(arrays, params={'other': {}}), workdir)


def test_layer_wise_lr_decay_values():
  model_cfg = mae_run_config().model
  _, params, _ = fresh_classifier()
  decay = 0.5
  scales = classifier.lr_scales(params, model_cfg, decay)
  top = DEPTH + 1  # layers: 0 = embeddings, 1..DEPTH = blocks, DEPTH + 1 = final norm and head
  bb = scales['backbone']
  assert all(v == 1.0 for v in jax.tree.leaves(scales['head']))
  assert all(v == 1.0 for v in jax.tree.leaves(bb['norm']))
  for i in range(DEPTH):
    assert set(jax.tree.leaves(bb[f'block{i}'])) == {decay ** (top - (i + 1))}
  assert set(jax.tree.leaves(bb['patch_embed'])) == {decay ** top}
  assert bb['cls'] == decay ** top
  # the optimizer applies them: AdamW's first step moves each leaf by lr * scale * g / |g|
  config = ft_config('')
  config.optim.update(weight_decay=0.0, lr=0.256, lr_scaling='linear', layer_decay=decay)
  tx, schedule = optim.build(config.optim, config.batch_size, 10, 0, mask=classifier.decay_mask,
                             scales=scales)
  peak = float(schedule(0))
  assert peak == pytest.approx(0.016)
  grads = jax.tree.map(lambda p: jnp.full(p.shape, 0.3, jnp.float32), params)
  updates, _ = jax.jit(tx.update)(grads, tx.init(params), params)
  ratio = jax.tree.map(lambda u: float(np.abs(np.asarray(u)).max()) / peak, updates)
  jax.tree.map(lambda r, s: np.testing.assert_allclose(r, s, rtol=1e-4), ratio, scales)
  # weight decay spares biases, norms and the CLS token; it reaches kernels
  mask = classifier.decay_mask(params)
  assert not mask['backbone']['cls'] and not mask['backbone']['norm']['scale']
  assert not mask['head']['bias'] and mask['head']['kernel']
  assert mask['backbone']['block0']['attn']['qkv']['kernel']


def test_resnet_layer_ids():
  z = np.zeros((3, 3, 4, 4), np.float32)
  params = {'backbone': {'stem_conv': {'kernel': z}, 'stem_bn': {'scale': z[0, 0, 0]},
                         **{f'stage{s}_block1': {'conv1': {'kernel': z}} for s in range(1, 5)}},
            'head': {'kernel': z[0, 0]}}
  model_cfg = get_config('simclr').model  # resnet_tiny
  ids, top = classifier.layer_ids(params, model_cfg)
  assert top == 5 and ids['head']['kernel'] == 5
  assert ids['backbone']['stem_conv']['kernel'] == 0 == ids['backbone']['stem_bn']['scale']
  assert [ids['backbone'][f'stage{s}_block1']['conv1']['kernel'] for s in range(1, 5)] == [1, 2,
                                                                                          3, 4]
  scales = classifier.lr_scales(params, model_cfg, 0.8)
  assert scales['backbone']['stem_conv']['kernel'] == pytest.approx(0.8 ** 5)


def test_select_labelled_budget():
  labels = np.repeat(np.arange(5), [10, 3, 8, 8, 8])
  chosen = finetune.select_labelled(labels, 4, seed=0)
  np.testing.assert_array_equal(np.bincount(labels[chosen]), [4, 3, 4, 4, 4])
  assert len(set(chosen.tolist())) == len(chosen)
  np.testing.assert_array_equal(chosen, finetune.select_labelled(labels, 4, seed=0))
  assert not np.array_equal(chosen, finetune.select_labelled(labels, 4, seed=1))
  assert len(finetune.select_labelled(labels, 0, seed=0)) == len(labels)


def test_random_resized_crop_and_flip():
  images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3)).astype(np.uint8)
  out, flipped, crops = jax.jit(lambda r, x: (
      augment_jax.crop_and_flip(r, x, 16, (1.0, 1.0), (1.0, 1.0), 0.0),
      augment_jax.crop_and_flip(r, x, 16, (1.0, 1.0), (1.0, 1.0), 1.0),
      augment_jax.crop_and_flip(r, x, 8, (0.2, 0.5), (0.75, 1.33), 0.5)))(jax.random.PRNGKey(0), images)
  np.testing.assert_allclose(out, images / 255.0, atol=1e-5)  # the whole image: identity
  np.testing.assert_allclose(flipped, images[:, :, ::-1] / 255.0, atol=1e-5)
  assert crops.shape == (4, 8, 8, 3) and 0.0 <= float(crops.min()) <= float(crops.max()) <= 1.0
  assert np.abs(np.asarray(crops) - jax.image.resize(images / 255.0, (4, 8, 8, 3),
                                                     'linear')).max() > 0.05  # not the whole


def test_batch_indices_cover_each_epoch_and_are_a_function_of_the_step():
  n, b = 10, 4
  stream = np.concatenate([finetune.batch_indices(n, b, 3, k) for k in range(5)])  # 2 epochs
  assert sorted(stream[:10].tolist()) == list(range(10)) == sorted(stream[10:20].tolist())
  assert not np.array_equal(stream[:10], stream[10:20])  # a new permutation each epoch
  np.testing.assert_array_equal(finetune.batch_indices(n, b, 3, 2), stream[8:12])  # spans two
  assert not np.array_equal(finetune.batch_indices(n, b, 4, 0), stream[:4])  # seeded


@pytest.mark.slow  # ~1 min on 2 CPU cores: the 8-device train step and eval compile
def test_finetune_runs_end_to_end_and_resumes(pretrain_run, tmp_path):
  workdir, _ = pretrain_run
  out = str(tmp_path / 'ft')
  config = ft_config(workdir)
  config.update(total_steps=4)
  config.checkpoint.keep = 10
  result = finetune.finetune(config, out, log=lambda msg: None)
  assert 0.0 <= result['top1'] <= 1.0 and result['eval_examples'] == 64
  assert result['loaded_pretrained'] and result['pretrain_step'] == 7
  assert result['train_examples'] == 16 and result['steps'] == 4
  with open(os.path.join(out, 'final.json')) as f:
    assert json.load(f)['top1'] == result['top1']
  assert os.path.exists(os.path.join(out, 'curves.png'))
  # a rerun of the finished run reports its figures
  assert finetune.finetune(config, out, log=lambda msg: None) == result
  # as if killed after step 2: the same command resumes there and ends where the whole run did
  for name in ('checkpoints/3', 'checkpoints/4', 'final.json'):
    shutil.rmtree(os.path.join(out, name)) if os.path.isdir(os.path.join(out, name)) else \
        os.remove(os.path.join(out, name))
  lines = []
  resumed = finetune.finetune(config, out, log=lines.append)
  assert any('resumed from step 2' in line for line in lines)
  timings = ('seconds', 'steps_per_s')
  assert {k: v for k, v in resumed.items() if k not in timings} == {
      k: v for k, v in result.items() if k not in timings}
  assert result['steps_per_s'] > 0  # logged every step here: from step 1 to 4
  scratch = finetune.finetune(ft_config(workdir, True), None, log=lambda msg: None)
  assert not scratch['loaded_pretrained'] and np.isfinite(scratch['loss'])
  changed = ft_config(workdir, True)
  changed.update(total_steps=4)
  with pytest.raises(workdir_lib.WorkdirError, match='from_scratch'):
    finetune.finetune(changed, out, log=lambda msg: None)


def test_command_line_errors_are_one_line(tmp_path):
  """A missing pre-training run and a bad preset: one `error:` line each, exit status 2."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  cases = ((['--config.pretrain_workdir', str(tmp_path / 'nosuch')], 'nosuch'),
           (['--config', 'finetune:nosuch'], 'nosuch'))
  for args, named in cases:
    proc = subprocess.run([sys.executable, '-m', 'jssl.finetune', *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith('error: ') and named in lines[-1], proc.stderr
    assert 'Traceback' not in proc.stderr
