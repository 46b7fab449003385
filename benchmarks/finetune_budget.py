"""Pre-training + fine-tuning against fine-tuning from scratch at equal total CPU time.

    python benchmarks/finetune_budget.py --runs runs/cifar10_cpu [--methods ibot,dinov2,ijepa]
        [--seed 0] [--out RUNS/finetune] [--labels_per_class 100] [--finetune_epochs 30]
        [--docs docs]

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
3. writes OUT/results.md and OUT/results.json, and with `--docs` the same table between the
   fine-tune markers of DOCS/results.md (the rest of the file is kept).

Every command is printed before it runs; finished runs (final.json) are never rerun, so the
script resumes, and an interrupted fine-tuning resumes from its last checkpoint.
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
  config = json.load(open(os.path.join(pretrain_workdir, 'config.json')))
  return json.dumps(config['model'], sort_keys=True)


def finetune(pretrain_workdir: str, workdir: str, extra: list) -> dict:
  """Runs (or resumes, or reads back) one `jssl.finetune`; returns its final.json with wall_s,
  the wall time of the commands that made it."""
  final, timing = os.path.join(workdir, 'final.json'), os.path.join(workdir, 'timing.json')
  if not os.path.exists(final):
    cmd = [sys.executable, '-m', 'jssl.finetune', f'--workdir={workdir}',
           f'--config.pretrain_workdir={pretrain_workdir}', '--config.eval.every_epochs=0',
           *extra]
    print('$ ' + ' '.join(cmd), file=sys.stderr, flush=True)
    t = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    previous = json.load(open(timing)) if os.path.exists(timing) else {}
    with open(timing, 'w') as f:
      json.dump({'wall_s': time.time() - t + previous.get('wall_s', 0.0),
                 'command': ' '.join(cmd[1:])}, f)
  result = json.load(open(final))
  result.update(json.load(open(timing)))
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


def table(rows: dict) -> str:
  head = ('| method | pre-training wall (min) | fine-tuned top-1 | fine-tune wall (min) | '
          'from scratch, equal time | scratch steps (epochs) | scratch wall (min) | gain |')
  lines = [head, '|' + ' --- |' * (head.count('|') - 1)]
  for name, r in rows.items():
    ft, sc = r['finetune'], r['scratch']
    lines.append(
        f'| {name} | {r["pretrain_wall_s"] / 60:.1f} | {100 * ft["top1"]:.2f}% | '
        f'{ft["wall_s"] / 60:.1f} | {100 * sc["top1"]:.2f}% | {sc["steps"]} '
        f'({sc["epochs"]:.0f}) | {sc["wall_s"] / 60:.1f} | '
        f'{100 * (ft["top1"] - sc["top1"]):+.2f} |')
  return '\n'.join(lines)


def report(rows: dict, command: str, labels_per_class: int, epochs: float) -> str:
  examples = next(iter(rows.values()))['finetune']['eval_examples']
  return '\n'.join([
      START, f'Made by `{command}` on {time.strftime("%Y-%m-%d")}, {cifar10_cpu.machine()}.',
      '',
      f'Fine-tuned end to end on {labels_per_class} training images per class '
      f'({epochs:g} epochs, configs/finetune.py), top-1 on all {examples:,} test images; "from '
      'scratch, equal time": the same architecture from random init on the same images, without '
      'layer decay, for the pre-training\'s wall time plus the fine-tuning\'s (runs with one '
      'backbone share the largest such budget).', '', table(rows), '', END])


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
    pretrained[name] = (workdir, json.load(open(os.path.join(workdir, 'timing.json')))['wall_s'])
  os.makedirs(out, exist_ok=True)
  rows = compare(pretrained, out, args.labels_per_class, args.finetune_epochs)
  command = cifar10_cpu.shown_command('python benchmarks/finetune_budget.py --runs RUNS', argv,
                                     ('--runs', '--out', '--docs'))
  block = report(rows, command, args.labels_per_class, args.finetune_epochs)
  with open(os.path.join(out, 'results.md'), 'w') as f:
    f.write(block + '\n')
  with open(os.path.join(out, 'results.json'), 'w') as f:
    json.dump(rows, f, indent=1)
  if args.docs:
    write_docs(block, os.path.join(args.docs, 'results.md'))
  print(block)


if __name__ == '__main__':
  main(sys.argv[1:])
