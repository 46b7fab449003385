"""Every method at the same CPU budget on CIFAR-10: kNN top-1 against the random-init network.

    python benchmarks/cifar_budget.py --data /tmp/cifar10 --steps 200 --out runs/budget \
        [--methods simclr,byol,...] [--preset tiny] [-- --config.batch_size=128 ...]

`--data` is a folder with train/ and test/ class sub-folders (CIFAR-10 as JPEG files, one
folder per class). Each method runs its `tiny` preset (its own
hyper-parameters, the same narrow ResNet) for `--steps` steps on the full CIFAR-10 training
split through `python -m jssl.main`, with the kNN monitor of the random-init network at step 0
and of the trained one at the end (k = 20; a bank of `--bank` training images spread evenly
over the split, every one of the 10,000 test images as queries). Anything
after `--` is passed to every run. A finished method (final.json present) is not rerun, so the
command resumes. Writes OUT/table.md (a markdown table) and prints it.

The budget cuts each preset's run short, so schedules a method states in epochs (DINO's frozen
last layer, SwAV's frozen prototypes and queue start) are scaled to keep their fraction of the
run: a key of e epochs in a preset of E epochs becomes e * (budget epochs) / E, passed as
`--config.method.KEY=...` (printed with the command). DINO's teacher-temperature warm-up is a
per-epoch staircase in whole epochs (as in DINO's code) and is left as the preset sets it.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

ALL = ('simclr', 'byol', 'nnclr', 'mean_shift', 'moco_v2', 'moco_v3', 'simsiam', 'dino',
       'vicreg', 'barlow_twins', 'swav', 'mae', 'simmim')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCH_KEYS = {'dino': ('freeze_last_layer_epochs',),
              'swav': ('freeze_prototypes_epochs', 'queue_start_epoch')}


def preset_config(method: str, preset: str):
  spec = importlib.util.spec_from_file_location(f'budget_{method}',
                                                os.path.join(ROOT, 'configs', f'{method}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def count_images(folder: str) -> int:
  return sum(len(os.listdir(os.path.join(folder, d))) for d in os.listdir(folder)
             if os.path.isdir(os.path.join(folder, d)))


def epoch_overrides(method: str, preset: str, steps: int, train_examples: int) -> list[str]:
  """`--config.method.KEY=...` keeping each epoch-valued schedule's fraction of the run."""
  keys = EPOCH_KEYS.get(method, ())
  if not keys:
    return []
  c = preset_config(method, preset)
  budget_epochs = steps / max(train_examples // c.batch_size, 1)
  preset_epochs = (c.total_steps / max(train_examples // c.batch_size, 1) if c.total_steps
                   else c.total_epochs)
  return [f'--config.method.{k}={c.method[k] * budget_epochs / preset_epochs:.6g}' for k in keys]


def run_method(method: str, args, extra: list[str]) -> dict:
  workdir = os.path.join(args.out, method)
  final = os.path.join(workdir, 'final.json')
  if not os.path.exists(final):
    cmd = [sys.executable, '-m', 'jssl.main', f'--config={ROOT}/configs/{method}.py:{args.preset}',
           f'--workdir={workdir}', f'--config.data.source=folder:{args.data}',
           f'--config.data.eval_source=folder:{args.data}', f'--config.total_steps={args.steps}',
           '--config.eval.at_start=True', '--config.eval.final=True',
           '--config.eval.every_epochs=0', '--config.log.tensorboard=False',
           f'--config.eval.max_train_examples={args.bank}']
    cmd += epoch_overrides(method, args.preset, args.steps,
                           count_images(os.path.join(args.data, 'train'))) + extra
    print('$ ' + ' '.join(cmd), file=sys.stderr, flush=True)
    t = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT)
    with open(os.path.join(workdir, 'wall_s.txt'), 'w') as f:
      f.write(f'{time.time() - t:.1f}\n')
  with open(final) as f:
    result = json.load(f)
  wall = os.path.join(workdir, 'wall_s.txt')
  result['wall_s'] = float(open(wall).read()) if os.path.exists(wall) else float('nan')
  return result


def table(rows: dict, steps: int) -> str:
  lines = [f'| method | steps | wall (min) | images/s | kNN top-1 random init | kNN top-1 after '
           f'{steps} steps | gain |', '| --- | --- | --- | --- | --- | --- | --- |']
  for name, r in rows.items():
    init, final = r.get('knn_top1_random_init', float('nan')), r.get('knn_top1', float('nan'))
    lines.append(f'| {name} | {r["step"]} | {r["wall_s"] / 60:.1f} | '
                 f'{r.get("images_per_s", float("nan")):.0f} | {100 * init:.2f}% | '
                 f'{100 * final:.2f}% | {100 * (final - init):+.2f} |')
  return '\n'.join(lines)


def main(argv):
  extra = argv[argv.index('--') + 1:] if '--' in argv else []
  argv = argv[:argv.index('--')] if '--' in argv else argv
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', required=True, help='folder with train/ and test/')
  parser.add_argument('--steps', type=int, default=200)
  parser.add_argument('--out', default='runs/budget')
  parser.add_argument('--preset', default='tiny')
  parser.add_argument('--bank', type=int, default=10000, help='kNN bank size (0: all 50,000)')
  parser.add_argument('--methods', default=','.join(ALL))
  args = parser.parse_args(argv)
  for split in ('train', 'test'):
    if not os.path.isdir(os.path.join(args.data, split)):
      parser.error(f'--data {args.data}: no {split}/ folder (CIFAR-10 as JPEG class folders '
                   f'under {split}/)')
  rows = {}
  for method in args.methods.split(','):
    if method not in ALL:
      parser.error(f'--methods: unknown method {method!r}; choose from {",".join(ALL)}')
    rows[method] = run_method(method, args, extra)
    text = table(rows, args.steps)
    with open(os.path.join(args.out, 'table.md'), 'w') as f:
      f.write(text + '\n')
  print(text)


if __name__ == '__main__':
  main(sys.argv[1:])
