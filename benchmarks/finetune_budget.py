"""Pre-training + fine-tuning against fine-tuning from scratch at equal total CPU time.

    python benchmarks/finetune_budget.py --runs runs/cifar10_cpu [--methods ibot,dinov2,ijepa]
        [--seed 0] [--out RUNS/finetune] [--labels_per_class 100] [--finetune_epochs 30]
        [--docs docs]

`--methods` takes any of the table's ViT rows: ibot, dinov2, ijepa (the default) and the masked
image models mae, simmim and beit (BEiT's pre-training time includes its tokenizer's).
For each method, RUNS/METHOD/seedSEED is a finished pre-training run of the results table
(benchmarks/cifar10_cpu.py: its final.json, and its timing.json with the wall time of the whole
command, kNN evaluations and probe included). The script

1. fine-tunes its backbone end to end (`python -m jssl.finetune`, configs/finetune.py's recipe)
   on `--labels_per_class` training images per class for `--finetune_epochs` epochs, timing the
   whole command;
2. trains the same architecture from random init (`--from_scratch`) on the same labelled images
   for as long as the pre-training and the fine-tuning took together, without layer-wise lr
   decay (`SCRATCH`): the fine-tuning's steps plus as many as fit in the pre-training's wall
   time at the fine-tuning's measured pace (`steps_per_s`, from the end of its first step to its
   last: start-up and compilation, which the scratch run pays as well, left out). Methods with
   the same backbone share one scratch run, sized to the largest of their budgets, so scratch
   never gets less time than a pre-trained model had;
3. writes OUT/results.md and OUT/results.json; with `--docs`, it keeps each comparison as a
   record in DOCS/results/finetune.json (one per method, seed, labels per class and fine-tuning
   epochs: a new measurement of the same four replaces the old, others stay) and writes the
   table of every record between the fine-tune markers of DOCS/results.md (the rest of the
   file is kept). A comparison at another `--finetune_epochs` wants its own `--out`: OUT's
   finished runs are read back, never rerun.

Every command is printed before it runs; finished runs (final.json) are never rerun, so the
script resumes, and an interrupted fine-tuning resumes from its last checkpoint; its wall time
counts every attempt (a killed one's up to the last file it wrote).
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(ROOT, 'benchmarks') not in sys.path:  # loaded by path (the tests)
  sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
import cifar10_cpu  # pylint: disable=g-import-not-at-top,wrong-import-position
START, END = '<!-- finetune table: start -->', '<!-- finetune table: end -->'
# A random init has no lower layers worth keeping: the scratch run trains every layer at the full
# learning rate (layer decay is the fine-tuning's way of protecting what pre-training learnt, and a
# handicap to a baseline; MAE's from-scratch ViTs use none either).
SCRATCH = ('--config.optim.layer_decay=1.0',)


def read_json(path: str):
  with open(path) as f:
    return json.load(f)


def scratch_steps(finetune_steps: int, steps_per_s: float, pretrain_wall: float) -> int:
  """Steps of a from-scratch run that take the pre-training's wall time plus the fine-tuning's:
  the fine-tuning's steps and `pretrain_wall` more seconds at its pace (the same architecture
  and batch: the same cost per step; both runs pay the same start-up)."""
  if not steps_per_s or steps_per_s <= 0 or finetune_steps <= 0:
    raise ValueError(f'fine-tuning pace {steps_per_s} steps/s, {finetune_steps} steps: both must '
                     'be positive')
  return finetune_steps + int(math.ceil(pretrain_wall * steps_per_s))


def backbone_key(pretrain_workdir: str) -> str:
  """What makes two runs' backbones the same architecture: config.json's model block."""
  config = read_json(os.path.join(pretrain_workdir, 'config.json'))
  return json.dumps(config['model'], sort_keys=True)


def finetune(pretrain_workdir: str, workdir: str, extra: list) -> dict:
  """Runs (or resumes, or reads back) one `jssl.finetune`; returns its final.json with wall_s,
  the wall time of the commands that made it (a killed one's up to its last write)."""
  final, timing = os.path.join(workdir, 'final.json'), os.path.join(workdir, 'timing.json')
  if not os.path.exists(final):
    cmd = [sys.executable, '-m', 'jssl.finetune', f'--workdir={workdir}',
           f'--config.pretrain_workdir={pretrain_workdir}', '--config.eval.every_epochs=0',
           *extra]
    print('$ ' + ' '.join(cmd), file=sys.stderr, flush=True)
    before = cifar10_cpu.earlier_attempts(timing, workdir, {}).get('wall_s', 0.0)
    t = time.time()
    os.makedirs(workdir, exist_ok=True)
    with open(timing, 'w') as f:
      json.dump({'wall_s': before, 'running_since': t, 'command': ' '.join(cmd[1:])}, f)
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    with open(timing, 'w') as f:
      json.dump({'wall_s': time.time() - t + before, 'command': ' '.join(cmd[1:])}, f)
  result = read_json(final)
  result.update(read_json(timing))
  result['workdir'] = workdir
  return result


def compare(pretrained: dict, out: str, labels_per_class: int, epochs: float) -> dict:
  """`pretrained`: {name: (workdir, pretrain wall seconds)}. Fine-tunes each, then one scratch
  run per backbone; returns {name: {'pretrain_wall_s', 'finetune': result, 'scratch': result}}."""
  common = [f'--config.labels_per_class={labels_per_class}']
  rows, groups = {}, {}
  for name, (workdir, pretrain_wall) in pretrained.items():
    ft = finetune(workdir, os.path.join(out, f'ft-{name}'),
                  common + [f'--config.total_epochs={epochs}'])
    rows[name] = {'pretrain_wall_s': pretrain_wall, 'finetune': ft}
    groups.setdefault(backbone_key(workdir), []).append(name)
  for names in groups.values():
    budget = {n: rows[n]['pretrain_wall_s'] + rows[n]['finetune']['wall_s'] for n in names}
    widest = max(names, key=budget.get)
    ft = rows[widest]['finetune']
    steps = scratch_steps(ft['steps'], ft['steps_per_s'], rows[widest]['pretrain_wall_s'])
    scratch = finetune(pretrained[widest][0], os.path.join(out, f'scratch-{"-".join(names)}'),
                       common + [f'--config.total_steps={steps}', '--from_scratch', *SCRATCH])
    for n in names:
      rows[n].update(scratch=scratch, budget_s=budget[n])
  return rows


def records(rows: dict, seed: int, labels_per_class: int, epochs: float, command: str) -> list:
  """One record per method of `compare`'s rows: what the table needs, with the command, the
  machine and the date its last run finished."""
  keep = ('top1', 'steps', 'epochs', 'wall_s', 'eval_examples')
  out = []
  for name, r in rows.items():
    out.append({'method': name, 'seed': seed, 'labels_per_class': labels_per_class,
                'finetune_epochs': epochs, 'pretrain_wall_s': r['pretrain_wall_s'],
                'budget_s': r['budget_s'],
                'finetune': {k: r['finetune'][k] for k in keep if k in r['finetune']},
                'scratch': {k: r['scratch'][k] for k in keep if k in r['scratch']},
                'date': r.get('date', time.strftime('%Y-%m-%d')), 'command': command,
                'machine': cifar10_cpu.machine()})
  return out


def _key(record: dict) -> tuple:
  return (record['method'], record['seed'], record['labels_per_class'],
          float(record['finetune_epochs']))


def merge_records(path: str, new: list) -> list:
  """DOCS/results/finetune.json's records with `new` in (a record of the same method, seed,
  labels per class and epochs replaces the old one); writes and returns them, sorted."""
  old = []
  if os.path.exists(path):
    try:
      old = read_json(path)
    except ValueError as e:
      raise SystemExit(f'{path}: not JSON ({e})') from e
    fields = ('method', 'seed', 'labels_per_class', 'finetune_epochs', 'finetune', 'scratch')
    if not (isinstance(old, list) and all(isinstance(r, dict) and all(f in r for f in fields)
                                          for r in old)):
      raise SystemExit(f'{path}: not a list of fine-tune records, each with ' + ', '.join(fields))
  merged = {_key(r): r for r in old}
  merged.update({_key(r): r for r in new})
  result = [merged[k] for k in sorted(merged)]
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w') as f:
    json.dump(result, f, indent=1)
    f.write('\n')
  return result


def table(records: list) -> str:
  head = ('| method | labels / class | fine-tune epochs | pre-training wall (min) | '
          'fine-tuned top-1 | fine-tune wall (min) | from scratch, equal time | '
          'scratch steps (epochs) | scratch wall (min) | gain |')
  lines = [head, '|' + ' --- |' * (head.count('|') - 1)]
  for r in records:
    ft, sc = r['finetune'], r['scratch']
    lines.append(
        f'| {r["method"]} | {r["labels_per_class"]} | {r["finetune_epochs"]:g} | '
        f'{r["pretrain_wall_s"] / 60:.1f} | {100 * ft["top1"]:.2f}% | '
        f'{ft["wall_s"] / 60:.1f} | {100 * sc["top1"]:.2f}% | {sc["steps"]} '
        f'({sc["epochs"]:.0f}) | {sc["wall_s"] / 60:.1f} | '
        f'{100 * (ft["top1"] - sc["top1"]):+.2f} |')
  return '\n'.join(lines)


def report(records: list) -> str:
  """The docs block: the table of `records` and the command, date and machine of each."""
  examples = records[0]['finetune'].get('eval_examples', 0)
  made = sorted({(r['command'], r['date'], r['machine']) for r in records},
                key=lambda m: (m[1], m[0]))
  return '\n'.join([
      START, 'Made by:', '',
      *[f'- `{command}` on {date}, {where}.' for command, date, where in made], '',
      'Fine-tuned end to end on the stated number of training images per class for the stated '
      f'epochs (configs/finetune.py), top-1 on all {examples:,} test images; "from scratch, '
      'equal time": the same architecture from random init on the same images, without layer '
      'decay, for the pre-training\'s wall time plus the fine-tuning\'s (runs with one backbone '
      'share the largest such budget).', '', table(records), '', END])


def write_docs(block: str, path: str) -> None:
  text = open(path).read() if os.path.exists(path) else ''
  if START in text and END in text:
    text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
  else:
    text = text + ('\n' if text else '') + '## Pre-training + fine-tuning against scratch at ' \
        'equal CPU time\n\n' + block + '\n'
  with open(path, 'w') as f:
    f.write(text)


def main(argv):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--runs', required=True, help='the results table folder (RUNS/METHOD/seedN)')
  p.add_argument('--methods', default='ibot,dinov2,ijepa')
  p.add_argument('--seed', type=int, default=0)
  p.add_argument('--out', default='', help='default: RUNS/finetune')
  p.add_argument('--labels_per_class', type=int, default=100)
  p.add_argument('--finetune_epochs', type=float, default=30.0)
  p.add_argument('--docs', default='', help='write the table into DOCS/results.md as well')
  args = p.parse_args(argv)
  out = args.out or os.path.join(args.runs, 'finetune')
  pretrained = {}
  for name in [m for m in args.methods.split(',') if m]:
    workdir = os.path.join(args.runs, name, f'seed{args.seed}')
    for f in ('final.json', 'timing.json'):
      if not os.path.exists(os.path.join(workdir, f)):
        p.error(f'{os.path.join(workdir, f)} not found: run benchmarks/cifar10_cpu.py '
                f'--methods {name} first')
    pretrained[name] = (workdir, read_json(os.path.join(workdir, 'timing.json'))['wall_s'])
  os.makedirs(out, exist_ok=True)
  rows = compare(pretrained, out, args.labels_per_class, args.finetune_epochs)
  for r in rows.values():  # the date the comparison's last run finished
    r['date'] = time.strftime('%Y-%m-%d', time.gmtime(max(
        os.path.getmtime(os.path.join(r[part]['workdir'], 'final.json'))
        for part in ('finetune', 'scratch'))))
  command = cifar10_cpu.shown_command('python benchmarks/finetune_budget.py --runs RUNS', argv,
                                     ('--runs', '--out', '--docs'))
  new = records(rows, args.seed, args.labels_per_class, args.finetune_epochs, command)
  block = report(new)
  with open(os.path.join(out, 'results.md'), 'w') as f:
    f.write(block + '\n')
  with open(os.path.join(out, 'results.json'), 'w') as f:
    json.dump(rows, f, indent=1)
  if args.docs:
    block = report(merge_records(os.path.join(args.docs, 'results', 'finetune.json'), new))
    write_docs(block, os.path.join(args.docs, 'results.md'))
  print(block)


if __name__ == '__main__':
  main(sys.argv[1:])
