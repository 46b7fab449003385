"""benchmarks/cifar10_cpu.py: the results table from finished runs, the held-out split, presets."""

import importlib.util
import json
import os
import pathlib

import pytest
import scripts

ROOT = pathlib.Path(__file__).resolve().parents[1]
table_lib = scripts.load('cifar10_cpu')


def _fake_run(out, method, seed, knn, init, other_cores=0.0, batch=256, step=1000):
  workdir = out / method / f'seed{seed}'
  workdir.mkdir(parents=True)
  (workdir / 'config.json').write_text(json.dumps({'batch_size': batch}))
  (workdir / 'final.json').write_text(json.dumps({
      'step': step, 'knn_top1': knn, 'knn_top1_k20': knn, 'knn_top1_k200': knn - 0.02,
      'knn_top1_random_init': init, 'linear_top1': knn + 0.05, 'images_per_s': 500.0,
      'effective_rank': 40.0 + seed}))
  (workdir / 'timing.json').write_text(json.dumps({'wall_s': 1500.0 + 60 * seed,
                                                   'other_cores': other_cores}))


def test_table_rows_aggregate_seeds_and_mark_busy_cores(tmp_path):
  _fake_run(tmp_path, 'simclr', 0, 0.60, 0.29)
  _fake_run(tmp_path, 'simclr', 1, 0.62, 0.29)
  _fake_run(tmp_path, 'dino', 0, 0.45, 0.27, other_cores=0.8)
  rows = table_lib.finished_runs(str(tmp_path))
  assert list(rows) == ['simclr', 'dino'] and len(rows['simclr']) == 2
  text = table_lib.table(rows, pixels=0.48, num_train=50_000)
  lines = text.splitlines()
  assert len(lines) == 4 and lines[0].count('|') == lines[1].count('|') == lines[2].count('|')
  simclr = [c.strip() for c in lines[2].split('|')[1:-1]]
  # method, preset, seeds, steps, epochs, wall, img/s, idle, init, k20, k200, probe, vs px, rank
  assert simclr[:8] == ['simclr', 'cifar10_cpu', '2', '1000', '5.1', '25.5 ± 0.7', '500 ± 0', 'yes']
  assert simclr[8] == '29.00 ± 0.00%' and simclr[9] == '61.00 ± 1.41%'
  assert simclr[12] == '13.00 ± 1.41' and simclr[13] == '40.5 ± 0.7'
  dino = [c.strip() for c in lines[3].split('|')[1:-1]]
  assert dino[7] == 'no' and dino[12] == '-3.00'


def test_report_and_plot_are_written(tmp_path):
  _fake_run(tmp_path / 'runs', 'byol', 0, 0.55, 0.29)
  rows = table_lib.finished_runs(str(tmp_path / 'runs'))
  path = tmp_path / 'results.md'
  table_lib.write_report(rows, {'knn_top1_pixels': 0.48}, 50_000, str(path), 'cmd',
                         'images/results.png')
  text = path.read_text()
  assert '`cmd`' in text and '| byol |' in text and '48.00%' in text
  path.write_text('# Results\n\nbefore\n' + text[text.index(table_lib.START):] + '\nafter\n')
  _fake_run(tmp_path / 'runs', 'dino', 0, 0.50, 0.27)
  table_lib.write_report(table_lib.finished_runs(str(tmp_path / 'runs')),
                         {'knn_top1_pixels': 0.48}, 50_000, str(path), 'cmd2')
  text = path.read_text()
  assert text.startswith('# Results\n\nbefore\n') and text.endswith('\nafter\n')
  assert '| dino |' in text and '`cmd2`' in text and '`cmd`' not in text
  table_lib.plot(rows, 0.48, str(tmp_path / 'images' / 'results.png'))
  assert (tmp_path / 'images' / 'results.png').read_bytes()[:4] == b'\x89PNG'


def test_holdout_folder_keeps_classes_and_never_overlaps(tmp_path):
  for cls in ('cat', 'dog'):
    (tmp_path / 'data' / 'train' / cls).mkdir(parents=True)
    for i in range(10):
      (tmp_path / 'data' / 'train' / cls / f'{i}.jpg').write_bytes(b'x')
  folder = table_lib.holdout_folder(str(tmp_path / 'data'), str(tmp_path / 'out'), 4)
  train = {(c, f) for c in ('cat', 'dog') for f in os.listdir(os.path.join(folder, 'train', c))}
  test = {(c, f) for c in ('cat', 'dog') for f in os.listdir(os.path.join(folder, 'test', c))}
  assert not train & test and len(train | test) == 20
  assert {c for c, _ in test} == {'cat', 'dog'} and len(test) == 4  # every 5th of each class
  assert table_lib.holdout_folder(str(tmp_path / 'data'), str(tmp_path / 'out'), 4) == folder


@pytest.mark.parametrize('method', table_lib.METHODS)
def test_every_method_of_the_table_has_a_cifar10_cpu_preset(method):
  spec = importlib.util.spec_from_file_location(f'cfg_{method}', ROOT / 'configs' / f'{method}.py')
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  c = module.get_config('cifar10_cpu')
  if method in table_lib.JOINT_EMBEDDING:
    assert c.model.name == 'resnet_tiny' and c.model.width == 16
  else:
    assert c.model.name.startswith('vit')
  assert c.batch_size == 256
  assert c.total_steps > 0 and c.eval.at_start and c.eval.max_train_examples == 0
  from jssl.train.validate import validate  # pylint: disable=g-import-not-at-top
  validate(c)


def test_a_stopped_run_keeps_its_time_and_the_resumed_run_adds_to_it(tmp_path, monkeypatch):
  """A run stopped by SIGTERM (exit 0, no final.json) records its wall time and asks for a rerun;
  the rerun adds its own wall time, and the busy-core figure is the time-weighted mean."""
  clock = {'t': 0.0, 'busy': 0.0}
  monkeypatch.setattr(table_lib.time, 'time', lambda: clock['t'])
  monkeypatch.setattr(table_lib, 'busy_cpu_seconds', lambda: clock['busy'])
  monkeypatch.setattr(table_lib, 'children_cpu_seconds', lambda: 0.0)
  workdir = tmp_path / 'simclr' / 'seed0'
  workdir.mkdir(parents=True)

  def stopped(cmd, **kwargs):  # 600 s, other processes busy for 60 CPU-s: 0.1 cores
    clock['t'] += 600.0
    clock['busy'] += 60.0

  def finished(cmd, **kwargs):  # 300 s more, idle, and it ends
    clock['t'] += 300.0
    (workdir / 'final.json').write_text(json.dumps({'step': 10, 'knn_top1': 0.5}))

  monkeypatch.setattr(table_lib.subprocess, 'run', stopped)
  with pytest.raises(SystemExit, match='rerun the same command'):
    table_lib.run('simclr', 0, str(tmp_path), 'DATA')
  assert json.loads((workdir / 'timing.json').read_text())['wall_s'] == 600.0
  monkeypatch.setattr(table_lib.subprocess, 'run', finished)
  result = table_lib.run('simclr', 0, str(tmp_path), 'DATA')
  assert result['wall_s'] == 900.0 and result['knn_top1'] == 0.5
  assert result['other_cores'] == pytest.approx(60.0 / 900.0)


def test_records_keep_rows_of_runs_this_machine_no_longer_has(tmp_path):
  """Finished runs are saved to DOCS/results/METHOD.json; a later table is built from those
  records and the runs under a new OUT, a new run replacing only the record of its own seed."""
  docs = tmp_path / 'docs'
  _fake_run(tmp_path / 'old', 'simclr', 0, 0.60, 0.29)
  _fake_run(tmp_path / 'old', 'simclr', 1, 0.62, 0.29)
  _fake_run(tmp_path / 'old', 'dino', 0, 0.45, 0.27, other_cores=0.8)
  table_lib.save_records(table_lib.finished_runs(str(tmp_path / 'old')), str(docs))
  saved = json.loads((docs / 'results' / 'simclr.json').read_text())
  assert [r['seed'] for r in saved] == [0, 1] and saved[1]['knn_top1'] == 0.62
  assert saved[0]['batch_size'] == 256 and saved[0]['cores_idle'] and 'workdir' not in saved[0]
  before = table_lib.table(table_lib.recorded_runs(str(docs)), pixels=0.48, num_train=50_000)
  assert before == table_lib.table(table_lib.finished_runs(str(tmp_path / 'old')), 0.48, 50_000)
  _fake_run(tmp_path / 'new', 'simclr', 1, 0.70, 0.29)  # the old runs are gone
  _fake_run(tmp_path / 'new', 'byol', 0, 0.55, 0.29)
  rows = table_lib.save_records(table_lib.finished_runs(str(tmp_path / 'new')), str(docs))
  assert list(rows) == ['simclr', 'byol', 'dino']
  assert [r['knn_top1'] for r in rows['simclr']] == [0.60, 0.70]
  assert not rows['dino'][0]['cores_idle']
  lines = table_lib.table(rows, pixels=0.48, num_train=50_000).splitlines()
  assert [c.strip() for c in lines[2].split('|')[1:-1]][9] == '65.00 ± 7.07%'
  assert [c.strip() for c in lines[4].split('|')[1:-1]][7] == 'no'
  for bad in ('{"step": 3}', '[{"seed": 0}]', '[{"seed": 0, "step": 3'):
    (docs / 'results' / 'byol.json').write_text(bad)
    with pytest.raises(SystemExit, match='byol.json'):
      table_lib.recorded_runs(str(docs))


def test_shown_command_drops_this_machines_paths():
  cmd = [f'--config={table_lib.ROOT}/configs/simclr.py:cifar10_cpu', '--workdir=/x/y',
         '--config.seed=1', '--config.data.source=folder:/d', '--data', '/d', '--methods', 'a']
  assert table_lib.shown_command('python', cmd, table_lib.PATH_FLAGS) == (
      'python --config=configs/simclr.py:cifar10_cpu --config.seed=1 --methods a')


def test_beits_row_trains_its_tokenizer_first_and_counts_its_time(tmp_path, monkeypatch):
  """BEiT's row runs configs/dvae.py:cifar10_cpu under OUT/dvae/seedS, then BEiT reading that
  tokenizer; the row's wall time is both runs', its busy-core figure their time-weighted mean."""
  clock = {'t': 0.0, 'busy': 0.0}
  monkeypatch.setattr(table_lib.time, 'time', lambda: clock['t'])
  monkeypatch.setattr(table_lib, 'busy_cpu_seconds', lambda: clock['busy'])
  monkeypatch.setattr(table_lib, 'children_cpu_seconds', lambda: 0.0)
  commands = []

  def fake(cmd, **kwargs):
    commands.append(cmd)
    workdir = next(a.split('=', 1)[1] for a in cmd if a.startswith('--workdir='))
    clock['t'] += 200.0 if '/dvae/' in workdir else 600.0
    clock['busy'] += 80.0 if '/dvae/' in workdir else 0.0  # 0.4 cores busy beside the dVAE
    pathlib.Path(workdir).mkdir(parents=True, exist_ok=True)
    (pathlib.Path(workdir) / 'final.json').write_text(json.dumps({'step': 9, 'knn_top1': 0.4}))

  monkeypatch.setattr(table_lib.subprocess, 'run', fake)
  result = table_lib.run('beit', 2, str(tmp_path), 'DATA')
  dvae_cmd, beit_cmd = commands
  assert any(a.endswith('configs/dvae.py:cifar10_cpu') for a in dvae_cmd)
  assert '--config.eval.linear_probe=True' not in dvae_cmd
  assert f'--config.method.tokenizer_workdir={tmp_path}/dvae/seed2' in beit_cmd
  assert '--config.eval.linear_probe=True' in beit_cmd
  assert result['wall_s'] == 800.0 and result['other_cores'] == pytest.approx(80.0 / 800.0)
  assert list(table_lib.finished_runs(str(tmp_path))) == ['beit']  # the tokenizer is no row
  assert table_lib.run('beit', 2, str(tmp_path), 'DATA')['wall_s'] == 800.0
  assert len(commands) == 2  # finished: nothing reruns


def test_a_killed_attempt_counts_to_its_last_write_with_its_cores_as_busy(tmp_path, monkeypatch):
  """An attempt killed with its parent (no timing written at its end) still counts: from its
  start to the last file it wrote, with its cores unmeasured and so marked busy."""
  clock = {'t': 1000.0, 'busy': 0.0}
  monkeypatch.setattr(table_lib.time, 'time', lambda: clock['t'])
  monkeypatch.setattr(table_lib, 'busy_cpu_seconds', lambda: clock['busy'])
  monkeypatch.setattr(table_lib, 'children_cpu_seconds', lambda: 0.0)
  workdir = tmp_path / 'simclr' / 'seed0'

  def killed(cmd, **kwargs):  # a checkpoint 300 s in, then the benchmark itself is killed
    (workdir / 'checkpoints').mkdir()
    (workdir / 'checkpoints' / 'step_100').write_text('')
    os.utime(workdir / 'checkpoints' / 'step_100', (1300.0, 1300.0))
    raise KeyboardInterrupt

  def finished(cmd, **kwargs):  # 900 s more on idle cores
    clock['t'] += 900.0
    (workdir / 'final.json').write_text(json.dumps({'step': 10, 'knn_top1': 0.5}))

  monkeypatch.setattr(table_lib.subprocess, 'run', killed)
  with pytest.raises(KeyboardInterrupt):
    table_lib.run('simclr', 0, str(tmp_path), 'DATA')
  clock['t'] = 5000.0
  monkeypatch.setattr(table_lib.subprocess, 'run', finished)
  result = table_lib.run('simclr', 0, str(tmp_path), 'DATA')
  assert result['wall_s'] == 1200.0
  assert result['other_cores'] == pytest.approx(300.0 / 1200.0)
  assert result['other_cores'] > table_lib.IDLE_CORES  # the row will not claim idle cores
  assert 'running_since' not in json.loads((workdir / 'timing.json').read_text())
