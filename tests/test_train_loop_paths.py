"""Training-loop paths the other tests leave out: the on-device photometric augmentation and
the periodic kNN monitor inside a run."""

import importlib.util
import json
import pathlib

import jax
import numpy as np

from jssl.train import loop

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(**data):
  spec = importlib.util.spec_from_file_location('cfg_simclr', ROOT / 'configs' / 'simclr.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config('tiny')
  c.batch_size, c.total_steps, c.steps_per_epoch = 16, 4, 2
  c.log.update(every_steps=1, tensorboard=False)
  c.checkpoint.update(every_steps=2, use_async=False)
  c.eval.update(every_epochs=1, at_start=False, final=False, batch_size=64,
                max_train_examples=128, knn_k=(5,), collapse_every_steps=0)
  c.data.update(data)
  return c


def _losses(workdir):
  return {r['step']: r['loss'] for r in map(json.loads, open(workdir / 'metrics.jsonl'))
          if 'loss' in r}


def test_on_device_photometric_path_and_periodic_knn_monitor(tmp_path):
  devices = jax.devices()[:1]
  on = _config(on_device_photometric=True)
  assert loop.device_augment(on.data) is not None
  loop.train(on, str(tmp_path / 'on'), devices=devices, log=lambda s: None)
  records = [json.loads(l) for l in open(tmp_path / 'on' / 'metrics.jsonl')]
  monitor = [r for r in records if 'knn_top1' in r]
  assert [r['step'] for r in monitor] == [2], records  # every epoch of 2 steps, not at the end
  assert 0.0 <= monitor[0]['knn_top1'] <= 1.0
  assert (tmp_path / 'on' / 'curves.png').is_file()
  off = _config(on_device_photometric=False)
  assert loop.device_augment(off.data) is None
  loop.train(off, str(tmp_path / 'off'), devices=devices, log=lambda s: None)
  a, b = _losses(tmp_path / 'on'), _losses(tmp_path / 'off')
  assert sorted(a) == sorted(b) == [1, 2, 3, 4]
  assert np.all(np.isfinite(list(a.values())))
  assert a != b  # the photometric half ran on the device instead of the host
