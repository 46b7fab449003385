"""benchmarks/cifar_budget.py: the epoch-valued schedules keep their fraction of a cut-short run."""

import pytest
import scripts

budget = scripts.load('cifar_budget')


def overrides(method, steps, examples=50_000):
  out = budget.epoch_overrides(method, 'tiny', steps, examples)
  return {a.split('=')[0].split('.')[-1]: float(a.split('=')[1]) for a in out}


def test_dino_and_swav_schedules_keep_their_fraction_of_the_run():
  """tiny: 4 epochs, batch 128. 200 steps of 390 per epoch = 0.5128 epochs; a 1-epoch freeze
  (a quarter of the preset's run) becomes a quarter of the budget: 50 steps = 0.1282 epochs."""
  dino = overrides('dino', 200)
  assert dino['freeze_last_layer_epochs'] * 390 == pytest.approx(50, abs=1e-3)
  assert 'warmup_teacher_temp_epochs' not in dino  # whole epochs, a staircase: left as set
  swav = budget.preset_config('swav', 'tiny').method
  scaled = overrides('swav', 200)
  assert scaled['freeze_prototypes_epochs'] == pytest.approx(
      swav.freeze_prototypes_epochs * (200 / 390) / 4, rel=1e-5)
  assert scaled['queue_start_epoch'] == pytest.approx(swav.queue_start_epoch * (200 / 390) / 4,
                                                      rel=1e-5)
  assert overrides('simclr', 200) == {} and overrides('mae', 200) == {}


def test_count_images_counts_class_folders(tmp_path):
  for cls, n in (('cat', 3), ('dog', 2)):
    (tmp_path / cls).mkdir()
    for i in range(n):
      (tmp_path / cls / f'{i}.jpg').write_bytes(b'x')
  (tmp_path / 'README').write_text('not a class')
  assert budget.count_images(str(tmp_path)) == 5
