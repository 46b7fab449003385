"""The CIFAR-10 results table: every method's `cifar10_cpu` preset, one protocol.

    python benchmarks/cifar10_cpu.py --data DIR [--methods all|none|simclr,dino,...] [--seeds 1]
        [--out runs/cifar10_cpu] [--docs docs] [--holdout 0]

`--data` holds train/ and test/ class folders (CIFAR-10 as JPEG files, one folder per class).
Each (method, seed) runs `python -m jssl.main --config configs/METHOD.py:cifar10_cpu`
on the whole training split with `--config.seed=SEED`, its kNN monitor before training (the
random-init network, BatchNorm in inference mode) and after it (k = 20 and 200, T = 0.07, the
whole training split as the bank, every eval image as a query, whole 32 px images), and the
linear probe at the end. BEiT's row trains its tokenizer first (configs/dvae.py:cifar10_cpu,
under OUT/dvae/seedSEED) and counts that run's wall time in its own. A finished run
(final.json) is never rerun, so the command resumes; an interrupted run resumes from its last
checkpoint, and its wall time counts every attempt (a killed one's up to the last file it wrote,
with its cores marked busy: nothing measured them). Raw-pixel kNN, the floor every method must
beat, is measured once by `python -m jssl.eval` on the first finished run (OUT/baselines.json).

The table is made of every finished run under OUT, whatever command made it (so
`--methods simclr,byol --seeds 3` adds seeds to those rows), and of the runs recorded in
DOCS/results/: mean ± std over seeds where there are several. Each finished run's figures are
saved there as METHOD.json (one record per seed; a run under OUT replaces the record of its
seed), and raw-pixel kNN as baselines.json, so the table can be rebuilt, and extended one
method at a time, on a machine that no longer has the runs (`--methods none` only rebuilds
it). Each run records its wall time and whether its cores were idle: the CPU time the rest of
the machine used during the run (from /proc/stat, less the run's own), in cores; above 0.1
cores a row is marked busy.

Writes the table, with the command and machine, into DOCS/results.md (between its table
markers; the rest of the file is kept) and DOCS/images/results.png (a
grouped bar chart of raw pixels / random init / trained per method), and copies each run's
curves.png to DOCS/images/curves/METHOD.png. With `--holdout N` the runs train on the training
split less N images spread over its classes and are evaluated on those N (a folder of links made
under OUT): the split to choose recipes on, never the test split; its table goes to
OUT/results.md and docs/ is left alone.
"""

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOINT_EMBEDDING = ('simclr', 'byol', 'nnclr', 'moco_v2', 'moco_v3', 'mean_shift', 'simsiam',
                   'dino', 'vicreg', 'barlow_twins', 'swav')
# The ViT methods that predict masked or hidden patches as well: their own rows, same protocol.
PATCH_PREDICTION = ('ibot', 'dinov2', 'ijepa')
# Masked image modeling alone: rows of the same protocol (kNN and probe of the pre-trained ViT;
# benchmarks/finetune_budget.py fine-tunes them against scratch at equal CPU time).
MASKED_MODELING = ('mae', 'simmim', 'beit')
METHODS = JOINT_EMBEDDING + PATCH_PREDICTION + MASKED_MODELING
# A method whose row needs another run first (its time counted in the row): the tokenizer.
TOKENIZERS = {'beit': 'dvae'}
IDLE_CORES = 0.1  # other processes' mean CPU use above which a run is marked busy


def busy_cpu_seconds() -> float:
  """CPU seconds the whole machine spent busy (user+nice+system+irq+softirq+steal), or NaN."""
  try:
    with open('/proc/stat') as f:
      fields = [int(x) for x in f.readline().split()[1:]]
  except OSError:
    return float('nan')
  user, nice, system, _, _, irq, softirq, steal = (fields + [0] * 8)[:8]
  return (user + nice + system + irq + softirq + steal) / os.sysconf('SC_CLK_TCK')


def children_cpu_seconds() -> float:
  r = resource.getrusage(resource.RUSAGE_CHILDREN)
  return r.ru_utime + r.ru_stime


def holdout_folder(data: str, out: str, n: int) -> str:
  """OUT/holdout-N/{train,test}: links to the training images, every k-th image of each class
  (k = total // n) in test/, the rest in train/. Made once."""
  folder = os.path.join(out, f'holdout-{n}')
  done = os.path.join(folder, '.complete')
  if os.path.exists(done):
    return folder
  src = os.path.join(data, 'train')
  classes = sorted(d for d in os.listdir(src) if os.path.isdir(os.path.join(src, d)))
  files = {c: sorted(os.listdir(os.path.join(src, c))) for c in classes}
  every = max(sum(len(v) for v in files.values()) // n, 2)
  for c in classes:
    for split in ('train', 'test'):
      os.makedirs(os.path.join(folder, split, c), exist_ok=True)
    for i, name in enumerate(files[c]):
      link = os.path.join(folder, 'test' if i % every == 0 else 'train', c, name)
      if not os.path.lexists(link):
        os.symlink(os.path.abspath(os.path.join(src, c, name)), link)
  open(done, 'w').close()
  return folder


def run_command(method: str, seed: int, workdir: str, data: str, tokenizer: str = '') -> list:
  """The jssl.main command of one run (with the linear probe where it is a row)."""
  return [sys.executable, '-m', 'jssl.main',
          f'--config={ROOT}/configs/{method}.py:cifar10_cpu', f'--workdir={workdir}',
          f'--config.seed={seed}', f'--config.data.source=folder:{data}',
          f'--config.data.eval_source=folder:{data}'] + (
              ['--config.eval.linear_probe=True'] if method in METHODS else []) + (
              [f'--config.method.tokenizer_workdir={tokenizer}'] if tokenizer else [])


def earlier_attempts(timing: str, workdir: str, default: dict) -> dict:
  """`wall_s` and `other_cores` of a run's earlier attempts (`default` when it has none): those
  that ended wrote theirs to timing.json; one killed before it could (`running_since` still set)
  counts from its start to the last file it wrote in the workdir, its cores as busy, since
  nothing measured them."""
  if not os.path.exists(timing):
    return dict(default)
  with open(timing) as f:
    record = json.load(f)
  wall, others = record.get('wall_s', 0.0), record.get('other_cores', 0.0)
  since = record.get('running_since')
  if since is not None:
    last = max((os.path.getmtime(os.path.join(folder, name))
                for folder, _, names in os.walk(workdir) for name in names
                if os.path.join(folder, name) != timing), default=since)
    killed = max(last - since, 0.0)
    if killed > 0:
      others, wall = (others * wall + killed) / (wall + killed), wall + killed
  return {'wall_s': wall, 'other_cores': others}


def run(method: str, seed: int, out: str, data: str) -> dict:
  """Trains (or resumes) one run, its tokenizer's first where it has one; returns its final.json
  with the wall time (the tokenizer's included) and idleness (a time-weighted mean)."""
  workdir = os.path.join(out, method, f'seed{seed}')
  final, timing = os.path.join(workdir, 'final.json'), os.path.join(workdir, 'timing.json')
  tokenizer, first = '', {}
  if method in TOKENIZERS and not os.path.exists(final):
    first = run(TOKENIZERS[method], seed, out, data)
    tokenizer = os.path.join(out, TOKENIZERS[method], f'seed{seed}')
  if not os.path.exists(final):
    cmd = run_command(method, seed, workdir, data, tokenizer)
    print('$ ' + ' '.join(cmd), file=sys.stderr, flush=True)
    previous = earlier_attempts(timing, workdir, {
        k: first[k] for k in ('wall_s', 'other_cores') if k in first})
    before = previous.get('wall_s', 0.0)  # earlier parts of a resumed run: a time-weighted mean
    t, busy, own = time.time(), busy_cpu_seconds(), children_cpu_seconds()
    os.makedirs(workdir, exist_ok=True)
    with open(timing, 'w') as f:
      json.dump(dict(previous, running_since=t, command=' '.join(cmd[1:])), f)
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.time() - t
    others = (busy_cpu_seconds() - busy) - (children_cpu_seconds() - own)
    record = {'wall_s': wall + before,
              'other_cores': (max(others, 0.0) + previous.get('other_cores', 0.0) * before) /
                             (wall + before),
              'command': ' '.join(cmd[1:])}
    with open(timing, 'w') as f:
      json.dump(record, f)
    if not os.path.exists(final):  # stopped by SIGTERM: its checkpoint and wall time are kept
      sys.exit(f'{workdir} stopped at its last checkpoint before the end; rerun the same command '
               'to resume it')
  result = json.load(open(final))
  if os.path.exists(timing):
    result.update(json.load(open(timing)))
  return result


def baselines(out: str, workdir: str) -> dict:
  """Raw-pixel (and random-init) kNN through `python -m jssl.eval`, once: OUT/baselines.json."""
  path = os.path.join(out, 'baselines.json')
  if not os.path.exists(path):
    subprocess.run([sys.executable, '-m', 'jssl.eval', f'--workdir={workdir}', f'--output={path}'],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
  return json.load(open(path))


def finished_runs(out: str) -> dict:
  """{method: [result of each finished seed]} of every run under OUT, in table order."""
  rows = {}
  for method in METHODS:
    folder = os.path.join(out, method)
    if not os.path.isdir(folder):
      continue
    for seed_dir in sorted(os.listdir(folder)):
      workdir = os.path.join(folder, seed_dir)
      final = os.path.join(workdir, 'final.json')
      if os.path.exists(final):
        result = json.load(open(final))
        timing = os.path.join(workdir, 'timing.json')
        if os.path.exists(timing):
          result.update(json.load(open(timing)))
        config = os.path.join(workdir, 'config.json')
        if os.path.exists(config):
          result['batch_size'] = json.load(open(config))['batch_size']
        result['seed'] = int(seed_dir.removeprefix('seed'))
        result['date'] = time.strftime('%Y-%m-%d', time.gmtime(os.path.getmtime(final)))
        result['workdir'] = workdir
        rows.setdefault(method, []).append(result)
  return rows


# What a record in DOCS/results/METHOD.json keeps of a run: enough to rebuild its row.
RECORD_KEYS = ('seed', 'step', 'batch_size', 'wall_s', 'other_cores', 'cores_idle',
               'images_per_s', 'knn_top1_random_init', 'knn_top1', 'knn_top1_k20',
               'knn_top1_k200', 'linear_top1', 'effective_rank', 'date', 'machine', 'command')


def recorded_runs(docs: str) -> dict:
  """{method: [record of each seed]} from DOCS/results/METHOD.json, in table order."""
  rows = {}
  for method in METHODS:
    path = os.path.join(docs, 'results', f'{method}.json')
    if os.path.exists(path):
      try:
        records = json.load(open(path))
      except ValueError as e:
        raise SystemExit(f'{path}: not JSON ({e})') from e
      if not (isinstance(records, list) and
              all(isinstance(r, dict) and 'seed' in r and 'step' in r for r in records)):
        raise SystemExit(f'{path}: not a list of run records, each with "seed" and "step"')
      rows[method] = records
  return rows


def save_records(rows: dict, docs: str) -> dict:
  """Writes each method's finished runs into DOCS/results/METHOD.json (replacing the records of
  the same seeds, keeping the others); returns every recorded run, in table order."""
  os.makedirs(os.path.join(docs, 'results'), exist_ok=True)
  recorded = recorded_runs(docs)
  for method, results in rows.items():
    by_seed = {r['seed']: r for r in recorded.get(method, [])}
    for r in results:
      record = {k: r[k] for k in RECORD_KEYS if k in r}
      record['cores_idle'] = r.get('other_cores', 1.0) <= IDLE_CORES
      record['machine'] = r.get('machine', machine())
      if 'command' in record:
        record['command'] = shown_command('python', record['command'].split(), PATH_FLAGS)
      by_seed[r['seed']] = record
    with open(os.path.join(docs, 'results', f'{method}.json'), 'w') as f:
      json.dump([by_seed[s] for s in sorted(by_seed)], f, indent=1)
      f.write('\n')
  return recorded_runs(docs)


def _stat(values, scale=1.0, digits=2):
  values = [scale * v for v in values if v is not None]
  if not values:
    return 'n/a'
  mean = statistics.fmean(values)
  if len(values) == 1:
    return f'{mean:.{digits}f}'
  return f'{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}'


def table(rows: dict, pixels: float, num_train: int) -> str:
  head = ('| method | preset | seeds | steps | epochs | wall (min) | images/s | cores idle | '
          'kNN random init | kNN k=20 | kNN k=200 | linear probe | vs raw pixels | '
          'effective rank |')
  lines = [head, '|' + ' --- |' * (head.count('|') - 1)]
  for method, results in rows.items():
    get = lambda key: [r.get(key) for r in results]  # noqa: E731
    steps = results[0]['step']
    epochs = steps * results[0]['batch_size'] / num_train
    idle = all(r.get('cores_idle', r.get('other_cores', 1.0) <= IDLE_CORES) for r in results)
    after = [r.get('knn_top1_k20', r.get('knn_top1')) for r in results]
    lines.append(
        f'| {method} | cifar10_cpu | {len(results)} | {steps} | {epochs:.1f} | '
        f'{_stat([r.get("wall_s", float("nan")) for r in results], 1 / 60, 1)} | '
        f'{_stat(get("images_per_s"), 1, 0)} | {"yes" if idle else "no"} | '
        f'{_stat(get("knn_top1_random_init"), 100)}% | {_stat(after, 100)}% | '
        f'{_stat(get("knn_top1_k200"), 100)}% | {_stat(get("linear_top1"), 100)}% | '
        f'{_stat([a - pixels for a in after], 100):s} | {_stat(get("effective_rank"), 1, 1)} |')
  return '\n'.join(lines)


def plot(rows: dict, pixels: float, path: str) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  names = list(rows)
  mean = lambda xs: statistics.fmean(xs) if xs else 0.0  # noqa: E731
  init = [100 * mean([r['knn_top1_random_init'] for r in rows[m]
                      if 'knn_top1_random_init' in r]) for m in names]
  after = [100 * mean([r['knn_top1'] for r in rows[m]]) for m in names]
  fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(names) + 2), 4))
  xs = range(len(names))
  w = 0.27
  ax.bar([x - w for x in xs], [100 * pixels] * len(names), w, label='raw pixels', color='0.7')
  ax.bar(list(xs), init, w, label='random init', color='tab:orange')
  ax.bar([x + w for x in xs], after, w, label='trained', color='tab:blue')
  ax.set_xticks(list(xs), names, rotation=30, ha='right')
  ax.set_ylabel('kNN top-1 (k = 20), %')
  ax.set_title('CIFAR-10, cifar10_cpu presets (2 CPU cores, about 30 minutes each)')
  ax.grid(axis='y', alpha=0.3)
  ax.legend(fontsize='small')
  fig.tight_layout()
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.savefig(path, dpi=100)
  plt.close(fig)


# The flags of a run's command that hold this machine's paths, left out of what is shown.
PATH_FLAGS = ('--data', '--out', '--docs', '--workdir', '--config.data.source',
              '--config.data.eval_source')


def shown_command(head: str, argv: list, path_flags: tuple) -> str:
  """`head` and `argv` less the machine's paths (`--flag VALUE` / `--flag=VALUE` of
  `path_flags`; a `--config=PATH` is shown relative to the repository): the command a report
  shows."""
  shown, skip = [], False
  for a in argv:
    if skip:
      skip = False
    elif a in path_flags:
      skip = True
    elif a.startswith('--config=' + ROOT + os.sep):
      shown.append('--config=' + a[len('--config=' + ROOT + os.sep):])
    elif not a.startswith(tuple(f + '=' for f in path_flags)):
      shown.append(a)
  return ' '.join([head] + shown)


def machine() -> str:
  return f'{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform(terse=True)}'


START, END = '<!-- cifar10_cpu table: start -->', '<!-- cifar10_cpu table: end -->'


def write_report(rows: dict, base: dict, num_train: int, path: str, command: str,
                 images: str = '') -> str:
  """Writes the table between the START / END markers of `path` (the rest of the file is kept;
  a file without them gets a title and the block); returns the block."""
  pixels = base['knn_top1_pixels']
  block = '\n'.join([
      START,
      f'Made by `{command}` on {time.strftime("%Y-%m-%d")}, {machine()}.', '',
      'kNN top-1 (T = 0.07) of the frozen backbone with all 50,000 training images as the bank '
      'and all 10,000 test images as queries, whole 32 px images; random init: the same '
      'network before training, BatchNorm in inference mode; linear probe: jssl.eval\'s, on the '
      'same features. Wall time includes both kNN evaluations and the probe. Raw-pixel kNN '
      f'(k = 20): {100 * pixels:.2f}%. "vs raw pixels" is kNN k=20 minus that floor; effective '
      'rank: exp of the entropy of the normalized singular values of the test features.', '',
      table(rows, pixels, num_train), ''] + ([f'![results]({images})', ''] if images else []) +
      [END])
  text = open(path).read() if os.path.exists(path) else ''
  if START in text and END in text:
    text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
  else:
    text = '# CIFAR-10 results at a fixed CPU budget\n\n' + block + '\n' + text
  with open(path, 'w') as f:
    f.write(text)
  return block


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--data', required=True, help='folder with train/ and test/')
  parser.add_argument('--methods', default='all',
                      help='all, none (rebuild the table from the records only) or a list')
  parser.add_argument('--seeds', type=int, default=1)
  parser.add_argument('--out', default='runs/cifar10_cpu')
  parser.add_argument('--docs', default=os.path.join(ROOT, 'docs'))
  parser.add_argument('--holdout', type=int, default=0,
                      help='evaluate on N training images held out of training (recipe choice)')
  args = parser.parse_args(argv)
  for split in ('train', 'test'):
    if not os.path.isdir(os.path.join(args.data, split)):
      parser.error(f'--data {args.data}: no {split}/ folder')
  names = {'all': METHODS, 'none': ()}.get(args.methods, tuple(args.methods.split(',')))
  for name in names:
    if name not in METHODS:
      parser.error(f'--methods: unknown method {name!r}; choose from {",".join(METHODS)}')
  out = os.path.join(args.out, f'holdout-{args.holdout}') if args.holdout else args.out
  data = holdout_folder(args.data, args.out, args.holdout) if args.holdout else args.data
  for name in names:
    for seed in range(args.seeds):
      run(name, seed, out, data)
  finished = finished_runs(out)
  command = shown_command('python benchmarks/cifar10_cpu.py --data DIR', argv,
                          ('--data', '--out', '--docs'))
  num_train = sum(len(files) for _, _, files in os.walk(os.path.join(data, 'train')))
  if args.holdout:
    if finished:
      base = baselines(out, next(iter(finished.values()))[0]['workdir'])
      print(write_report(finished, base, num_train, os.path.join(out, 'results.md'), command))
    return
  recorded_base = os.path.join(args.docs, 'results', 'baselines.json')
  if finished:
    base = baselines(out, next(iter(finished.values()))[0]['workdir'])
    os.makedirs(os.path.dirname(recorded_base), exist_ok=True)
    with open(recorded_base, 'w') as f:  # the floors only: no paths of this machine
      json.dump({k: v for k, v in base.items() if k.startswith('knn_top1_pixels')
                 or k in ('num_train', 'num_eval')}, f, indent=1)
      f.write('\n')
  elif os.path.exists(recorded_base):
    base = json.load(open(recorded_base))
  else:
    return
  rows = save_records(finished, args.docs)
  for method, results in finished.items():
    curves = os.path.join(results[0]['workdir'], 'curves.png')
    if os.path.exists(curves):
      os.makedirs(os.path.join(args.docs, 'images', 'curves'), exist_ok=True)
      shutil.copy(curves, os.path.join(args.docs, 'images', 'curves', f'{method}.png'))
  plot(rows, base['knn_top1_pixels'], os.path.join(args.docs, 'images', 'results.png'))
  print(write_report(rows, base, num_train, os.path.join(args.docs, 'results.md'), command,
                     'images/results.png'))


if __name__ == '__main__':
  main(sys.argv[1:])
