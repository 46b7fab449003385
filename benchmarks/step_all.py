"""`jssl.bench step` for every method at one preset, as a markdown table.

    python benchmarks/step_all.py --preset cifar10 --batch_size 64 --out runs/step_all.md \
        [--methods simclr,byol,...] [--steps 2] [--warmup 1]

Runs `python -m jssl.bench step --config configs/<method>.py:<preset>` for each method in its own
process (one compile each; a failure is recorded, not fatal) with the batch size overridden
(CPU figures: images/s per image do not depend much on the batch once it fills the cores), and
writes one row per method: backbone, view sizes, images/s, step time, compile time, XLA GFLOPs
per image of the whole step (forward, backward, optimizer) and peak memory. BEiT needs a dVAE
run: pass `--beit_tokenizer WORKDIR` (otherwise BEiT is skipped, as the engine refuses to build
it without a tokenizer).
"""

import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ALL = ('simclr', 'byol', 'nnclr', 'mean_shift', 'moco_v2', 'moco_v3', 'simsiam', 'dino',
       'vicreg', 'barlow_twins', 'swav', 'mae', 'simmim', 'dvae', 'beit')


def bench(method: str, args) -> dict:
  cmd = [sys.executable, '-m', 'jssl.bench', 'step', f'--config={ROOT}/configs/{method}.py:{args.preset}',
         f'--config.batch_size={args.batch_size}', f'--steps={args.steps}', f'--warmup={args.warmup}']
  if method == 'beit':
    cmd.append(f'--config.method.tokenizer_workdir={args.beit_tokenizer}')
  out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
  if out.returncode != 0:
    return {'error': (out.stderr.strip().splitlines() or ['?'])[-1][:120]}
  return json.loads(out.stdout.strip().splitlines()[-1])


def row(method: str, r: dict) -> str:
  if 'error' in r:
    return f'| {method} | failed: {r["error"]} | | | | | | |'
  gflops = r.get('step_gflops_per_image')
  gflops = f'{gflops:.2f}' if gflops else '-'
  return (f'| {method} | {r["backbone"]} | {r["views"]} | {r["images_per_s"]:.1f} | '
          f'{r["step_ms"]:.0f} | {r["compile_s"]:.0f} | {gflops} | {r["peak_rss_mb"]:.0f} |')


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--preset', default='cifar10')
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--steps', type=int, default=2)
  parser.add_argument('--warmup', type=int, default=1)
  parser.add_argument('--methods', default=','.join(ALL))
  parser.add_argument('--beit_tokenizer', default='')
  parser.add_argument('--out', default='runs/step_all.md')
  args = parser.parse_args(argv)
  lines = [f'`{args.preset}` presets, batch {args.batch_size}, median of {args.steps} steps',
           '', '| method | backbone | views (px) | images/s | step (ms) | compile (s) | '
           'GFLOPs / image (step) | peak RSS (MB) |', '|---|---|---|---|---|---|---|---|']
  os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
  for method in args.methods.split(','):
    if method not in ALL:
      parser.error(f'--methods: unknown method {method!r}; choose from {",".join(ALL)}')
    if method == 'beit' and not args.beit_tokenizer:
      print('skipping beit: no --beit_tokenizer', file=sys.stderr)
      continue
    lines.append(row(method, bench(method, args)))
    with open(args.out, 'w') as f:
      f.write('\n'.join(lines) + '\n')
    print(lines[-1], flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
