"""benchmarks/finetune_budget.py: scratch gets the pre-training's time plus the fine-tuning's."""

import json
import os

import pytest
import scripts

budget = scripts.load('finetune_budget')


def test_scratch_steps_fill_pretraining_plus_finetuning_time():
  # 240 fine-tuning steps at 4 steps/s (60 s of training), 2600 s of pre-training: 10400 more.
  assert budget.scratch_steps(240, 4.0, 2600.0) == 240 + 10400
  assert budget.scratch_steps(240, 4.0, 0.0) == 240
  assert budget.scratch_steps(7, 3.0, 1.1) == 7 + 4  # ceil(3.3): never less time than the budget
  with pytest.raises(ValueError, match='positive'):
    budget.scratch_steps(300, 0.0, 10.0)
  with pytest.raises(ValueError, match='positive'):
    budget.scratch_steps(300, None, 10.0)


def _pretrained(tmp_path, name, model):
  workdir = tmp_path / name / 'seed0'
  workdir.mkdir(parents=True)
  (workdir / 'config.json').write_text(json.dumps({'model': model}))
  return str(workdir)


def test_one_scratch_run_per_backbone_sized_to_the_largest_budget(tmp_path, monkeypatch):
  vit96 = {'name': 'vit_tiny', 'width': 96}
  pretrained = {'ibot': (_pretrained(tmp_path, 'ibot', vit96), 2000.0),
                'dinov2': (_pretrained(tmp_path, 'dinov2', vit96), 2600.0),
                'ijepa': (_pretrained(tmp_path, 'ijepa', {'name': 'vit_tiny', 'width': 128}),
                          1000.0)}
  calls = []

  def fake_finetune(pretrain_workdir, workdir, extra):
    calls.append((pretrain_workdir, workdir, extra))
    scratch = '--from_scratch' in extra
    steps = next((int(a.split('=')[1]) for a in extra if 'total_steps' in a), 240)
    return {'top1': 0.30 if scratch else 0.40, 'steps': steps, 'epochs': steps / 8,
            'wall_s': 70.0 if not scratch else 10 + steps / 4.0, 'steps_per_s': 4.0,
            'eval_examples': 10000}

  monkeypatch.setattr(budget, 'finetune', fake_finetune)
  rows = budget.compare(pretrained, str(tmp_path / 'out'), 100, 30.0)
  scratch_calls = [c for c in calls if '--from_scratch' in c[2]]
  assert len(calls) == 5 and len(scratch_calls) == 2
  by_dir = {c[1].rsplit('/', 1)[-1]: c for c in scratch_calls}
  # ibot and dinov2 share one, sized to dinov2's 2600 s at 4 steps/s after the 240 steps.
  assert set(by_dir) == {'scratch-ibot-dinov2', 'scratch-ijepa'}
  assert '--config.total_steps=10640' in by_dir['scratch-ibot-dinov2'][2]
  assert by_dir['scratch-ibot-dinov2'][0] == pretrained['dinov2'][0]
  assert '--config.total_steps=4240' in by_dir['scratch-ijepa'][2]
  assert all('--config.labels_per_class=100' in c[2] for c in calls)
  # layer decay protects pre-trained layers; a random init trains every layer at the full lr
  assert all(('--config.optim.layer_decay=1.0' in c[2]) == ('--from_scratch' in c[2])
             for c in calls)
  assert rows['ibot']['budget_s'] == 2070.0 and rows['dinov2']['budget_s'] == 2670.0
  # the scratch run's wall (10 s start-up + 10640 / 4 s) is the pre-training's + fine-tuning's
  assert rows['dinov2']['scratch']['wall_s'] == rows['dinov2']['budget_s']
  assert rows['ibot']['scratch'] is rows['dinov2']['scratch']
  text = budget.table(budget.records(rows, 0, 100, 30.0, 'python benchmarks/finetune_budget.py'))
  lines = text.splitlines()
  assert len(lines) == 5 and all(l.count('|') == lines[0].count('|') for l in lines)
  ibot = [c.strip() for c in lines[2].split('|')[1:-1]]
  assert ibot[:3] == ['ibot', '100', '30'] and ibot[4] == '40.00%' and ibot[6] == '30.00%'
  assert ibot[-1] == '+10.00'


def _record(method, epochs, top1, command='cmd'):
  row = {'pretrain_wall_s': 600.0, 'budget_s': 700.0, 'date': '2026-01-02',
         'finetune': {'top1': top1, 'steps': 240, 'epochs': epochs, 'wall_s': 100.0,
                      'eval_examples': 10000, 'steps_per_s': 4.0},
         'scratch': {'top1': 0.3, 'steps': 2640, 'epochs': 330.0, 'wall_s': 700.0}}
  return budget.records({method: row}, 0, 100, epochs, command)[0]


def test_records_accumulate_across_commands_and_replace_the_same_measurement(tmp_path):
  path = str(tmp_path / 'results' / 'finetune.json')
  budget.merge_records(path, [_record('ibot', 30.0, 0.40), _record('dinov2', 30.0, 0.42)])
  # the same method at more epochs is another measurement: it is added
  merged = budget.merge_records(path, [_record('ibot', 100.0, 0.45, 'cmd --finetune_epochs 100')])
  assert [(r['method'], r['finetune_epochs']) for r in merged] == [
      ('dinov2', 30.0), ('ibot', 30.0), ('ibot', 100.0)]
  assert 'steps_per_s' not in merged[0]['finetune']  # only what the table needs is kept
  # the same method, seed, labels and epochs again: the new figure replaces the old one
  merged = budget.merge_records(path, [_record('ibot', 30, 0.38)])
  assert len(merged) == 3 and [r['finetune']['top1'] for r in merged] == [0.42, 0.38, 0.45]
  assert json.load(open(path)) == merged
  block = budget.report(merged)
  assert block.startswith(budget.START) and block.endswith(budget.END)
  assert '`cmd --finetune_epochs 100` on 2026-01-02' in block and '`cmd` on 2026-01-02' in block
  assert '| ibot | 100 | 100 |' in block and '| +15.00 |' in block


def test_a_bad_records_file_is_named(tmp_path):
  path = tmp_path / 'finetune.json'
  path.write_text('{not json')
  with pytest.raises(SystemExit, match='finetune.json: not JSON'):
    budget.merge_records(str(path), [])
  path.write_text(json.dumps([{'method': 'ibot'}]))
  with pytest.raises(SystemExit, match='finetune.json: not a list of fine-tune records'):
    budget.merge_records(str(path), [])


def test_docs_block_is_replaced_in_place(tmp_path):
  path = tmp_path / 'results.md'
  path.write_text('# Results\n\nbefore\n')
  budget.write_docs(budget.START + '\none\n' + budget.END, str(path))
  text = path.read_text()
  assert text.startswith('# Results\n\nbefore\n') and 'one' in text
  path.write_text(text + 'after\n')
  budget.write_docs(budget.START + '\ntwo\n' + budget.END, str(path))
  text = path.read_text()
  assert 'two' in text and 'one' not in text and text.endswith('after\n')
  assert text.count(budget.START) == 1


def test_a_killed_attempt_counts_up_to_its_last_write(tmp_path, monkeypatch):
  workdir = tmp_path / 'scratch-mae'
  attempts = []

  def killed_then_finished(cmd, **kwargs):
    since = json.loads((workdir / 'timing.json').read_text())['running_since']
    attempts.append(since)
    if len(attempts) == 1:  # writes a checkpoint 100 s into the attempt, then is killed
      (workdir / 'checkpoints').mkdir()
      (workdir / 'checkpoints' / 'step_300').write_text('')
      os.utime(workdir / 'checkpoints' / 'step_300', (since + 100.0, since + 100.0))
      raise KeyboardInterrupt
    (workdir / 'final.json').write_text(json.dumps({'top1': 0.4, 'steps': 900}))

  monkeypatch.setattr(budget.subprocess, 'run', killed_then_finished)
  with pytest.raises(KeyboardInterrupt):
    budget.finetune('pre', str(workdir), ['--from_scratch'])
  result = budget.finetune('pre', str(workdir), ['--from_scratch'])
  assert len(attempts) == 2 and result['top1'] == 0.4
  # 100 s of the killed attempt, plus the second's own (well under a second here)
  assert 100.0 <= result['wall_s'] < 110.0
  assert 'running_since' not in json.loads((workdir / 'timing.json').read_text())
  # a finished run is read back, never rerun
  assert budget.finetune('pre', str(workdir), [])['wall_s'] == result['wall_s']
  assert len(attempts) == 2
