"""python -m jssl.data.show --config: a run's own views, from its config and overrides."""

import importlib.util
import pathlib

import numpy as np

from jssl.data import pipeline, show

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(name, preset='tiny'):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}', ROOT / 'configs' / f'{name}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def test_views_are_the_runs_own_views_of_those_examples():
  config = _config('dino')
  images, outs, recipe = show.run_views(config, 3)
  assert len(images) == len(outs) == 3 and images[0].dtype == np.uint8
  assert sorted(outs[0]) == sorted(recipe.view_shapes) == [f'view_{i}' for i in range(4)]
  # the run's batches are bigger: the same examples get the same views in them
  batch = next(iter(pipeline.train_iterator(config.data, 16, config.seed)))
  small = next(iter(pipeline.train_iterator(config.data, 3, config.seed)))
  for j, index in enumerate(np.asarray(small['index'])):
    k = int(np.flatnonzero(np.asarray(batch['index']) == index)[0]) if index in batch['index'] \
        else None
    if k is not None:
      np.testing.assert_array_equal(outs[j]['view_0'], batch['view_0'][k])


def test_cli_with_a_shipped_config_name_and_overrides(tmp_path):
  out = tmp_path / 'views.png'
  assert show.main(['--config', 'simmim:tiny', '--config.seed=3', '--out', str(out),
                    '--n', '2']) == 0
  assert out.read_bytes()[:4] == b'\x89PNG'
  assert show.main(['--config', 'simclr:nosuch', '--out', str(out)]) == 2
  assert show.main(['--config', 'simclr:tiny', '--config.data.source=folder:/nonexistent',
                    '--out', str(out)]) == 2
