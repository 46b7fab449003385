"""Fault injection: kill a short run with SIGKILL at random moments, rerun it, compare.

    python benchmarks/faults.py --trials 20 [--steps 12] [--seed 0] [--out runs/faults]

Runs a small SimCLR (the tiny preset shrunk to a 1-block ResNet of width 4 on 64 synthetic
images, batch 16, a checkpoint every step so that many kills land during a checkpoint write)
once without interruption, then `--trials` times: start the same command in a fresh workdir,
SIGKILL it at a random moment, rerun the same command to the end. A fifth of the kills land
during start-up (uniform before the uninterrupted run's first logged step); the others are timed
from the trial's own first logged step, uniform over the uninterrupted run's training time, so
they land between steps, during checkpoint writes and near the end whatever the machine's load.
The step each rerun resumed from is read from its log. A trial passes when the resumed run's loss at every logged step (the last record of
each step in metrics.jsonl) and its final step, parameters, batch statistics and method state
are bitwise equal to the uninterrupted run's. Prints one JSON object: trials, equal,
the kill times, the step each rerun resumed from, and what differed.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

OVERRIDES = ['--config.model.width=4', '--config.model.stage_sizes=(1,)',
             '--config.method.proj_hidden_dims=(16,)', '--config.method.proj_dim=8',
             '--config.data.source=synthetic', '--config.data.eval_source=synthetic',
             '--config.data.image_size=8', '--config.data.synthetic.image_size=12',
             '--config.data.synthetic.num_examples=64', '--config.data.synthetic.num_classes=4',
             '--config.data.augment.image_size=8', '--config.data.eval_augment.image_size=8',
             '--config.batch_size=16', '--config.checkpoint.every_steps=1',
             '--config.checkpoint.keep=3', '--config.log.every_steps=1',
             '--config.log.tensorboard=False', '--config.eval.at_start=False',
             '--config.eval.final=False', '--config.eval.every_epochs=0',
             '--config.eval.collapse_every_steps=0']


def command(workdir: str, steps: int) -> list:
  return [sys.executable, '-m', 'jssl.main', '--config', 'simclr:tiny', '--workdir', workdir,
          f'--config.total_steps={steps}'] + OVERRIDES


def env() -> dict:
  e = dict(os.environ)
  e.setdefault('JAX_PLATFORMS', 'cpu')
  e.pop('XLA_FLAGS', None)  # one device, as a user's run
  return e


def wait_for_training(proc, workdir: str) -> bool:
  """Waits until the run logs its first step (metrics.jsonl exists); False if it ended first."""
  path = os.path.join(workdir, 'metrics.jsonl')
  while not os.path.exists(path):
    if proc.poll() is not None:
      return False
    time.sleep(0.02)
  return True


def run_to_end(workdir: str, steps: int) -> tuple:
  """`(wall seconds, seconds to the first logged step, the step it resumed from)`."""
  t = time.time()
  proc = subprocess.Popen(command(workdir, steps), cwd=ROOT, env=env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  first = time.time() - t if wait_for_training(proc, workdir) else float('nan')
  _, err = proc.communicate()
  if proc.returncode:
    raise RuntimeError(f'{workdir}: exit {proc.returncode}: {err[-2000:]}')
  resumed = re.search(r'resumed from step (\d+)', err)
  return time.time() - t, first, int(resumed.group(1)) if resumed else 0


def losses(workdir: str) -> dict:
  out = {}
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    for line in f:
      r = json.loads(line)
      if 'loss' in r:
        out[r['step']] = r['loss']  # a resumed run's re-logged steps: the last wins
  return out


def final_arrays(workdir: str) -> dict:
  sys.path.insert(0, ROOT)
  from jssl.train import runs  # pylint: disable=g-import-not-at-top
  return runs.restore_arrays(workdir)


def differences(a: dict, b: dict) -> list:
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  bad = []
  for key in ('step', 'params', 'batch_stats', 'method_state'):
    pa, pb = jax.tree_util.tree_flatten_with_path(a[key])[0], jax.tree.leaves(b[key])
    if len(pa) != len(pb):
      bad.append(f'{key}: structure')
      continue
    for (path, x), y in zip(pa, pb):
      if not np.array_equal(np.asarray(x), np.asarray(y)):
        bad.append(f'{key}{jax.tree_util.keystr(path)}')
  return bad


def trial(k: int, args, reference: dict, ref_losses: dict, wall: float, first: float) -> dict:
  workdir = os.path.join(args.out, f'trial{k}')
  shutil.rmtree(workdir, ignore_errors=True)
  during_startup = random.random() < 0.2
  delay = random.uniform(0.0, first) if during_startup else random.uniform(0.0, wall - first)
  proc = subprocess.Popen(command(workdir, args.steps), cwd=ROOT, env=env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  if not during_startup:
    wait_for_training(proc, workdir)
  time.sleep(delay)
  killed = proc.poll() is None
  if killed:
    proc.send_signal(signal.SIGKILL)
  proc.wait()
  _, _, resumed = run_to_end(workdir, args.steps)
  got = losses(workdir)
  bad = [f'loss at step {s}' for s in ref_losses if got.get(s) != ref_losses[s]]
  bad += differences(final_arrays(workdir), reference)
  return {'trial': k, 'killed': killed,
          'killed_after_s': round(delay, 2), 'after': 'start' if during_startup else 'first step',
          'resumed_from': resumed, 'equal': not bad, 'differs': bad[:10]}


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--trials', type=int, default=20)
  parser.add_argument('--steps', type=int, default=12)
  parser.add_argument('--seed', type=int, default=0)
  parser.add_argument('--out', default=os.path.join(ROOT, 'runs', 'faults'))
  args = parser.parse_args(argv)
  random.seed(args.seed)
  os.makedirs(args.out, exist_ok=True)
  straight = os.path.join(args.out, 'uninterrupted')
  shutil.rmtree(straight, ignore_errors=True)
  wall, first, _ = run_to_end(straight, args.steps)
  reference, ref_losses = final_arrays(straight), losses(straight)
  results = [trial(k, args, reference, ref_losses, wall, first) for k in range(args.trials)]
  report = {'trials': args.trials, 'equal': sum(r['equal'] for r in results),
            'resumed_from': sorted(r['resumed_from'] for r in results),
            'steps': args.steps, 'uninterrupted_wall_s': round(wall, 1),
            'uninterrupted_first_step_s': round(first, 1),
            'comparison': 'bitwise: the loss at every logged step; the final step, params, '
                          'batch_stats and method_state',
            'results': results}
  print(json.dumps(report))
  return 0 if report['equal'] == args.trials else 1


if __name__ == '__main__':
  sys.exit(main())
