"""The MIM CPU-budget comparison: MAE, SimMIM and dVAE -> BEiT on CIFAR-10, fine-tuned on a small
labelled budget against the same ViT trained from scratch on that budget.

    python benchmarks/mim_budget.py --out runs/mim_budget \
        [--data DIR] [--pretrain_steps 2000] [--dvae_steps 1000] \
        [--finetune_epochs 30] [--labels_per_class 100]

Steps:
1. Extract `DIR/{train,test}.tar.gz` (CIFAR-10 as JPEG folders, one per class) into a temporary
   folder (removed at the end unless --keep_data), read as `folder:PATH` (splits train / test).
2. Pre-train, each with `python -m jssl.main` at the `tiny` preset of its config (a width-128,
   depth-4 ViT with patch 4 at 32 px; the dVAE: vocabulary 256, 8 x 8 tokens), for the given
   steps: MAE, SimMIM, the dVAE, then BEiT reading the dVAE's checkpoint. Each writes
   recon_<step>.png at its evaluations (kNN on a bank of --knn_bank train images).
3. Fine-tune each pre-trained ViT with `python -m jssl.finetune` on --labels_per_class images per
   class, and train the same ViT from random init (`--from_scratch`) on the same images for the
   pre-training's wall time plus the fine-tuning's (BEiT's pre-training time includes its
   dVAE's): benchmarks/finetune_budget.py's equal-time rule, one scratch run per backbone.
4. Write OUT/results.md (a markdown table: loss first -> last, kNN top-1, wall times, fine-tuned
   top-1 against scratch at equal time, the commands) and OUT/results.json, and copy the last
   pictures to OUT/recon_<run>.png.

Every command is printed before it runs; a failed command stops the script (its stderr tail shown).
Pass --source embedded to use the package's 10k-image CIFAR-10 subset instead (no extraction).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(ROOT, 'benchmarks') not in sys.path:  # loaded by path (the tests)
  sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
import finetune_budget  # pylint: disable=g-import-not-at-top,wrong-import-position


def extract(data_dir: str, dest: str) -> str:
  """Extracts train.tar.gz and test.tar.gz of `data_dir` into `dest`; returns the folder whose
  train/ and test/ sub-folders hold one folder per class."""
  for split in ('train', 'test'):
    archive = os.path.join(data_dir, f'{split}.tar.gz')
    if not os.path.isfile(archive):
      raise FileNotFoundError(f'{archive} not found (--data names the folder of the CIFAR-10 '
                              'archives)')
    with tarfile.open(archive) as tar:
      tar.extractall(dest, filter='data')
  for split in ('train', 'test'):
    if not os.path.isdir(os.path.join(dest, split)):
      raise FileNotFoundError(f'{split}/ not found after extracting into {dest}')
  return dest


def run(cmd, log_path: str) -> tuple:
  """Runs `cmd` (stderr to log_path); returns (the last stdout line as JSON, wall seconds)."""
  print('$ ' + ' '.join(cmd), flush=True)
  t0 = time.time()
  with open(log_path, 'w') as err:
    proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                          check=False)
  wall = time.time() - t0
  if proc.returncode != 0:
    with open(log_path) as f:
      tail = f.read()[-3000:]
    raise RuntimeError(f'command failed ({proc.returncode}): {" ".join(cmd)}\n{tail}')
  lines = [l for l in proc.stdout.splitlines() if l.strip().startswith('{')]
  result = json.loads(lines[-1]) if lines else {}
  print(f'  -> {wall:.0f} s: ' + json.dumps({k: result[k] for k in list(result)[:8]}), flush=True)
  return result, wall


def loss_curve(workdir: str) -> tuple:
  """(first, last) training loss of a jssl.main run's metrics.jsonl."""
  losses = []
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      r = json.loads(line)
      if 'loss' in r:
        losses.append(r['loss'])
  return (losses[0], losses[-1]) if losses else (float('nan'), float('nan'))


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--out', default=os.path.join(ROOT, 'runs', 'mim_budget'))
  p.add_argument('--data', default='', help='folder of train.tar.gz / test.tar.gz (CIFAR-10 JPEG '
                 'class folders); required with --source folder')
  p.add_argument('--source', default='folder', choices=('folder', 'embedded'))
  p.add_argument('--keep_data', default='', help='extract here and keep it (default: a temp dir)')
  p.add_argument('--pretrain_steps', type=int, default=2000)
  p.add_argument('--dvae_steps', type=int, default=1000)
  p.add_argument('--batch_size', type=int, default=256)
  p.add_argument('--evals', type=int, default=2, help='evaluations (kNN + pictures) per run')
  p.add_argument('--knn_bank', type=int, default=10000, help='train images in the kNN bank')
  p.add_argument('--labels_per_class', type=int, default=100)
  p.add_argument('--finetune_epochs', type=float, default=30.0)
  p.add_argument('--methods', default='mae,simmim,beit', help='subset of mae,simmim,beit')
  args = p.parse_args(argv)
  out = os.path.abspath(args.out)
  os.makedirs(out, exist_ok=True)
  py = sys.executable
  wanted = [m for m in args.methods.split(',') if m]

  tmp = None
  if args.source == 'folder':
    dest = args.keep_data or tempfile.mkdtemp(prefix='cifar10_')
    tmp = None if args.keep_data else dest
    if not os.path.isdir(os.path.join(dest, 'test')):
      if not args.data:
        p.error('--source folder needs --data (the folder of train.tar.gz / test.tar.gz) or '
                '--keep_data holding train/ and test/ already')
      print(f'extracting {args.data} into {dest}', flush=True)
      extract(args.data, dest)
    source = f'folder:{dest}'
  else:
    source = 'embedded'
  try:
    results = {}

    def pretrain(name, config, steps, extra=()):
      workdir = os.path.join(out, name)
      # An "epoch" of the schedule = steps / evals steps: evaluations (kNN + pictures) at its
      # ends; warm-up 5% of the run. (The data order keeps its own epochs of the whole set.)
      period = max(steps // max(args.evals, 1), 1)
      cmd = [py, '-m', 'jssl.main', '--config', os.path.join(ROOT, 'configs', f'{config}.py'),
             '--workdir', workdir, f'--config.data.source={source}',
             f'--config.data.eval_source={source}', f'--config.total_steps={steps}',
             f'--config.steps_per_epoch={period}', '--config.eval.every_epochs=1',
             f'--config.optim.warmup_epochs={0.05 * steps / period:.4f}',
             f'--config.batch_size={args.batch_size}', '--config.log.every_steps=10',
             '--config.eval.at_start=False', f'--config.eval.max_train_examples={args.knn_bank}',
             f'--config.checkpoint.every_steps={max(steps // 2, 1)}', *extra]
      res, wall = run(cmd, os.path.join(out, f'{name}.log'))
      first, last = loss_curve(workdir)
      results[name] = dict(res, wall_s=round(wall), loss_first=first, loss_last=last, cmd=cmd)
      if os.path.isfile(os.path.join(workdir, 'recon.png')):
        shutil.copyfile(os.path.join(workdir, 'recon.png'), os.path.join(out, f'recon_{name}.png'))
      return workdir

    pre = {}
    for m in ('mae', 'simmim'):
      if m in wanted:
        pre[m] = (pretrain(m, m, args.pretrain_steps), results[m]['wall_s'])
    if 'beit' in wanted:
      dvae = pretrain('dvae', 'dvae', args.dvae_steps)
      beit = pretrain('beit', 'beit', args.pretrain_steps,
                      [f'--config.method.tokenizer_workdir={dvae}'])
      pre['beit'] = (beit, results['dvae']['wall_s'] + results['beit']['wall_s'])
    compared = finetune_budget.compare(pre, out, args.labels_per_class, args.finetune_epochs)

    def fmt(x, pct=False):
      if x is None or (isinstance(x, float) and x != x):
        return '-'
      return f'{100 * x:.2f}%' if pct else f'{x:.4g}'

    lines = [
        f'CIFAR-10 ({source.split(":")[0]}), pre-training {args.pretrain_steps} steps of '
        f'{args.batch_size} (dVAE {args.dvae_steps}), fine-tuning on {args.labels_per_class} '
        f'labels per class ({args.finetune_epochs:g} epochs), top-1 on the 10,000 test images; '
        'scratch: the same ViT from random init on the same labels for the pre-training\'s '
        'wall time plus the fine-tuning\'s (BEiT\'s includes its dVAE).', '',
        '| run | pre-train loss (first -> last) | kNN top-1 | pre-train wall | fine-tuned top-1 '
        '| fine-tune wall | scratch at equal time | gain |', '|---|---|---|---|---|---|---|---|']
    for name in ('mae', 'simmim', 'dvae', 'beit'):
      if name in results:
        r, c = results[name], compared.get(name)
        tail = (f'{fmt(c["finetune"]["top1"], True)} | {c["finetune"]["wall_s"]:.0f} s | '
                f'{fmt(c["scratch"]["top1"], True)} ({c["scratch"]["steps"]} steps, '
                f'{c["scratch"]["wall_s"]:.0f} s) | '
                f'{100 * (c["finetune"]["top1"] - c["scratch"]["top1"]):+.2f} |'
                if c else '- | - | - | - |')
        lines.append(f'| {name} | {fmt(r["loss_first"])} -> {fmt(r["loss_last"])} | '
                     f'{fmt(r.get("knn_top1"), True)} | {r["wall_s"]} s | ' + tail)
    results['compared'] = compared
    lines += ['', 'Pictures: ' + ', '.join(f'recon_{n}.png' for n in ('mae', 'simmim', 'dvae',
                                                                   'beit') if n in results), '',
              'Commands:', '']
    lines += ['    ' + ' '.join(results[k]['cmd']) for k in results if 'cmd' in results[k]]
    with open(os.path.join(out, 'results.md'), 'w') as f:
      f.write('\n'.join(lines) + '\n')
    with open(os.path.join(out, 'results.json'), 'w') as f:
      json.dump(results, f, indent=1)
    print('\n'.join(lines[:len(results) + 5]))
    print(f'wrote {os.path.join(out, "results.md")}')
  finally:
    if tmp:
      shutil.rmtree(tmp, ignore_errors=True)


if __name__ == '__main__':
  main()
