"""The training loop: `train(config, workdir) -> dict`, resumable and preemptible.

One linear pass: validate the config -> mesh -> dataset size -> method, optimizer, state ->
restore the newest checkpoint of workdir/checkpoints if any -> the data iterator from that step
-> jitted steps, with logging, checkpoints and the kNN monitor at their cadences -> final
checkpoint, evaluation (kNN, linear probe if configured), curves.png, final.json.

- Resuming: rerunning the same command continues from the last complete checkpoint; the data
  iterator restarts at its step, so the run sees the batches an uninterrupted run would.
- SIGTERM: the handler only sets a flag; the loop then saves the state and returns cleanly
  (`result['stopped'] == 'SIGTERM'`).
- Non-finite loss, gradient or parameters: the step leaves the state unchanged (jssl.train.step);
  the loop checks each step's metrics on the host one step late (so the device stays busy),
  and before every save, and raises `NonFiniteError` naming the step and the quantity. The
  newest checkpoint on disk is then the last good one.
- `stop_after_step` (tests): return at that step without a final save, as if killed.
- Multi-process runs (jssl.distributed): each process feeds its part of the global batch;
  progress, metrics.jsonl, curves.png, config.json and final.json come from process 0 only;
  checkpoints are written by all processes together (orbax). A SIGTERM seen by any process is
  shared through a tiny on-device vote read back with the step's metrics, so every process
  stops, and saves, at the same step. The workdir may be a gs:// path (etils.epath: tf.io.gfile).

`features_fn(method, mesh)` and `extract(...)` give frozen features for evaluation.
"""

import collections
import functools
import json
import os
import signal
import sys
import time

import jax
import numpy as np
from etils import epath

from jssl.methods import collapse
from jssl.train import checkpoint as checkpoint_lib
from jssl.train import logging as logging_lib
from jssl.train import param_groups, runs, sharding
from jssl.train import workdir as workdir_lib
from jssl.train import state as state_lib
from jssl.train import step as step_lib
from jssl.train.validate import validate


class NonFiniteError(FloatingPointError):
  """Raised when a step's loss, gradient norm or parameters are NaN or infinite."""


def stderr_log(msg: str) -> None:
  if jax.process_index() == 0:
    print(msg, file=sys.stderr, flush=True)


def schedule_plan(config, num_examples: int) -> dict:
  """Steps per epoch, total steps, warm-up steps and the eval period (in steps) of a run."""
  spe = config.steps_per_epoch or max(num_examples // config.batch_size, 1)
  total = config.total_steps or max(int(round(config.total_epochs * spe)), 1)
  return {'steps_per_epoch': spe, 'total_steps': total,
          'warmup_steps': int(round(config.optim.warmup_epochs * spe)),
          'eval_every': int(round(config.eval.every_epochs * spe))}


def device_augment(data_cfg):
  """The on-device photometric half of the recipe when the config asks for it, else None."""
  if not (data_cfg.on_device_photometric or data_cfg.augment.get('on_device', False)):
    return None
  from jssl.data import augment_jax  # pylint: disable=g-import-not-at-top
  photometric = augment_jax.photometric_fn(data_cfg.recipe, data_cfg.augment.to_dict())

  def augment(batch, rng):
    return dict(batch, **photometric({k: v for k, v in batch.items() if k.startswith('view_')},
                                     rng))
  return augment


def _to_host(x) -> np.ndarray:
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    x = multihost_utils.process_allgather(x, tiled=True)
  return np.asarray(x)


def extract(features, state, batches, mesh, max_examples: int = 0):
  """`(float32 [N, F], int32 [N])` features and labels of the valid rows of eval `batches`."""
  from jssl.data import feeding  # pylint: disable=g-import-not-at-top
  feats, labels, count = [], [], 0
  for batch in batches:
    g = feeding.global_batch({k: batch[k] for k in ('view_0', 'label', 'valid')}, mesh)
    f = _to_host(features(state.params, state.batch_stats, g['view_0'])).astype(np.float32)
    valid = _to_host(g['valid']).astype(bool)
    if max_examples:
      valid &= np.cumsum(valid) <= max_examples - count
    feats.append(f[valid])
    labels.append(_to_host(g['label']).astype(np.int32)[valid])
    count += int(valid.sum())
    if max_examples and count >= max_examples:
      break
  return np.concatenate(feats), np.concatenate(labels)


def evaluate(config, features, state, mesh, num_classes: int, final: bool) -> dict:
  """kNN top-1 (and at the end, if configured, the linear probe) on frozen features."""
  try:
    from jssl.eval import evaluate as eval_lib  # pylint: disable=g-import-not-at-top
  except ImportError:
    stderr_log('jssl.eval is not available: skipping evaluation')
    return {}
  from jssl.data import pipeline  # pylint: disable=g-import-not-at-top
  d, e = config.data, config.eval
  kw = dict(process_index=jax.process_index(), process_count=jax.process_count())
  bank = pipeline.eval_iterator(d, e.batch_size, split=d.train_split, source=d.source,
                                max_examples=e.max_train_examples, **kw)
  queries = pipeline.eval_iterator(d, e.batch_size, **kw)
  train_f, train_l = extract(features, state, bank, mesh, e.max_train_examples)
  eval_f, eval_l = extract(features, state, queries, mesh)
  eval_cfg = e.copy_and_resolve_references()
  with eval_cfg.unlocked():
    eval_cfg.linear_probe = bool(final and e.linear_probe)
  out = eval_lib.evaluate_features(train_f, train_l, eval_f, eval_l, num_classes=num_classes,
                                   eval_cfg=eval_cfg)
  out.update(collapse.feature_diagnostics(eval_f[:_DIAGNOSTIC_ROWS]))
  return {k: float(v) for k, v in out.items() if np.ndim(v) == 0}


_DIAGNOSTIC_ROWS = 10_000  # eval features the evaluation's collapse diagnostics use


def collapse_probe(config):
  """The fixed eval batches the collapse diagnostics run on, or None when they are off."""
  e = config.eval
  if not e.get('collapse_every_steps', 0):
    return None
  from jssl.data import pipeline  # pylint: disable=g-import-not-at-top
  return list(pipeline.eval_iterator(config.data, e.batch_size,
                                     max_examples=int(e.get('collapse_examples', 512)),
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count()))


_ENGINES = collections.OrderedDict()


def build_engine(config, plan: dict, mesh):
  """`(method, tx, init(seed), train_step, features)` for a config, jitted over `mesh`.

  The last two engines are cached by (model, method, optim, batch size, augmentation, plan,
  devices), so training the same config
  again in one process (a resumed run in a notebook, the tests) reuses the compiled functions.
  """
  parts = {k: config[k] for k in ('model', 'method', 'optim', 'batch_size')}
  parts['augment'] = (config.data.recipe, config.data.augment, config.data.on_device_photometric)
  key = (repr(parts), tuple(sorted(plan.items())), tuple(d.id for d in mesh.devices.flat))
  if key not in _ENGINES:
    method = runs.build_method(config, plan['total_steps'], plan['steps_per_epoch'])
    tx, schedule = param_groups.build(config.optim, config.batch_size, plan['total_steps'],
                                      plan['warmup_steps'],
                                      getattr(method, 'optim_groups', tuple)())
    _ENGINES[key] = (method, tx, state_lib.init_fn(method, tx, sharding.replicated(mesh)),
                     step_lib.make_train_step(method, tx, mesh, schedule,
                                              device_augment(config.data)),
                     step_lib.make_features_fn(method, mesh))
    while len(_ENGINES) > 2:
      _ENGINES.popitem(last=False)
  return _ENGINES[key]


def stop_vote(mesh):
  """Multi-process: `vote(requested) -> jax.Array`, the OR over all processes of their SIGTERM
  flags as a replicated scalar, computed on the devices without blocking (the loop reads it with
  the step's metrics, one step late, so every process decides at the same step). None for one
  process."""
  if jax.process_count() == 1:
    return None
  from jssl.data import feeding  # pylint: disable=g-import-not-at-top
  rows = len(mesh.local_devices)
  any_of = jax.jit(lambda x: x.max(), out_shardings=sharding.replicated(mesh))

  def vote(requested: bool):
    local = np.full([rows], float(requested), np.float32)
    return any_of(feeding.global_batch({'stop': local}, mesh)['stop'])
  return vote


class StopRequest:
  """A SIGTERM flag; installs its handler for the duration of a `with` block (main thread)."""

  def __init__(self):
    self.requested, self._previous = False, None

  def _handler(self, signum, frame):
    del signum, frame
    self.requested = True

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handler)
    except ValueError:  # not the main thread: no handler
      self._previous = None
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def _check_finite(step: int, metrics: dict, ckpt) -> None:
  if metrics.get('finite', 1.0) == 1.0:
    return
  bad = [name for name in ('loss', 'grad_norm', 'param_norm')
         if name in metrics and not np.isfinite(metrics[name])]
  what = {'loss': 'loss', 'grad_norm': 'gradient norm', 'param_norm': 'updated parameters'}
  desc = ', '.join(f'{what[b]} = {metrics[b]}' for b in bad) or 'non-finite values'
  ckpt.wait()
  raise NonFiniteError(
      f'non-finite {desc} at step {step}: training stopped, the state of that step was not '
      f'applied nor saved; the last good checkpoint is step {ckpt.latest_step()} in '
      f'{ckpt.directory}')


def train(config, workdir: str, *, devices=None, stop_after_step: int = 0,
          log=stderr_log) -> dict:
  """Trains (or resumes) `config` in `workdir`; returns the final figures.

  `devices`: the devices of the mesh (default all); `log(str)`: progress lines (stderr).
  The workdir is claimed first (jssl.train.workdir: writable, not in use by a live run, not
  holding another run) and released at the end.
  """
  validate(config)
  release = workdir_lib.claim(workdir, config, log) if jax.process_index() == 0 else None
  try:
    return _train(config, workdir, devices, stop_after_step, log)
  finally:
    if release is not None:
      release()


def _train(config, workdir, devices, stop_after_step, log) -> dict:
  from jssl.data import feeding, pipeline  # pylint: disable=g-import-not-at-top (TensorFlow)
  is_main = jax.process_index() == 0

  mesh = sharding.make_mesh(devices)
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval.batch_size, mesh, 'eval.batch_size')
  d = config.data
  info = pipeline.dataset_info(d.source, d.train_split, d.data_dir, d.synthetic.to_dict())
  plan = schedule_plan(config, info['num_examples'])
  total, spe = plan['total_steps'], plan['steps_per_epoch']

  method, tx, init, train_step, features = build_engine(config, plan, mesh)
  state = init(np.uint32(config.seed))
  ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'),
                                     config.checkpoint.every_steps, config.checkpoint.keep,
                                     config.checkpoint.use_async)
  if ckpt.latest_step() is not None:
    state = ckpt.restore_newest_readable(state, log)
    log(f'resumed from step {int(state.step)} ({ckpt.directory})')
  step = start = int(jax.device_get(state.step))
  finished = epath.Path(workdir, 'final.json')
  if step >= total and finished.exists():  # a rerun of a finished run: its own final figures
    ckpt.close()
    log(f'{workdir} holds a finished run (step {step} of {total}): nothing to do')
    return json.loads(finished.read_text())
  log(f'{method.name} on {info["num_examples"]} examples of {d.source}: {total} steps of '
      f'{config.batch_size} ({spe} per epoch), {len(mesh.devices.flat)} device(s), '
      f'{sum(x.size for x in jax.tree.leaves(state.params)) / 1e6:.2f}M parameters')

  keys = tuple(method.input_spec())
  host = pipeline.train_iterator(d, config.batch_size, config.seed, start_step=step,
                                 process_index=jax.process_index(),
                                 process_count=jax.process_count(),
                                 num_devices=len(mesh.devices.flat))
  batches = feeding.prefetch_to_device(({k: b[k] for k in keys} for b in host), 2, mesh)

  metrics_log = logging_lib.MetricsLog(workdir, is_main, config.log.tensorboard)
  if is_main and config.log.tensorboard and metrics_log.writer is None:
    log('TensorBoard writer unavailable (clu.metric_writers needs the tensorboard package): '
        'metrics go to metrics.jsonl only')
  progress = logging_lib.Progress(total, spe, config.batch_size, step)
  labeled = info.get('labeled', True) and info.get('num_classes', 0) > 0
  evaluate_now = functools.partial(evaluate, config, features, mesh=mesh,
                                   num_classes=info.get('num_classes', 0))
  probe, collapse_every = collapse_probe(config), int(config.eval.get('collapse_every_steps', 0))
  pending, sums, last, result = collections.deque(), collections.defaultdict(float), {}, {}
  vote, agreed_stop = stop_vote(mesh), False
  n_acc, t_first, steps_timed, eval_s = 0, None, 0, 0.0
  if labeled and config.eval.get('at_start', False) and step == 0:
    res = evaluate_now(state, final=False)  # the random-init floor, as step 0 of the curves
    metrics_log.write(0, res)
    log('step 0 (random init): ' + ', '.join(f'{k} {v:.4f}' for k, v in res.items()))
    result.update({k.replace('knn_top1', 'knn_top1_random_init'): v for k, v in res.items()
                   if k.startswith('knn_top1')})
    result.update({f'{k}_random_init': res[k] for k in ('effective_rank', 'embedding_std')
                   if k in res})

  def drain(keep: int):
    nonlocal n_acc, agreed_stop
    while len(pending) > keep:
      s, m = pending.popleft()
      m = {k: float(v) for k, v in jax.device_get(m).items()}
      _check_finite(s, m, ckpt)
      m.pop('finite', None)
      agreed_stop |= m.pop('stop', 0.0) > 0
      for k, v in m.items():
        sums[k] += v
      n_acc += 1

  with StopRequest() as stop:
    stopping = lambda: agreed_stop if vote else stop.requested  # noqa: E731
    while step < total and not stopping():
      state, metrics = train_step(state, next(batches))
      if vote:
        metrics = dict(metrics, stop=vote(stop.requested))
      step += 1
      if step == start + 1:
        jax.block_until_ready(metrics)
        t_first = time.time()
        progress.restart_clock(step)
      else:
        steps_timed += 1
      pending.append((step, metrics))
      save_due = step % ckpt.every_steps == 0
      log_due = step % config.log.every_steps == 0 or step == total
      eval_due = labeled and plan['eval_every'] and step % plan['eval_every'] == 0 and step < total
      drain(0 if (save_due or log_due or eval_due or stopping()) else 1)
      if log_due and n_acc:
        last = {k: v / n_acc for k, v in sums.items()}
        last['epoch'] = step / spe
        if probe is not None and (step % collapse_every == 0 or step == total):
          last.update(collapse.feature_diagnostics(extract(features, state, probe, mesh)[0]))
        metrics_log.write(step, last)
        log(progress.line(step, last))
        sums.clear()
        n_acc = 0
      if save_due:
        ckpt.save(state)
      if eval_due:
        t_eval = time.time()
        res = evaluate_now(state, final=False)
        metrics_log.write(step, res)
        log(f'step {step}: ' + ', '.join(f'{k} {v:.4f}' for k, v in res.items()))
        if is_main:
          logging_lib.plot_curves(workdir)
          if hasattr(method, 'recon_images'):  # MIM pictures (jssl.eval.recon_grid)
            from jssl.eval import recon_grid  # pylint: disable=g-import-not-at-top
            recon_grid.write_for_state(method, state, config, workdir, step, log)
        progress.restart_clock(step)
        eval_s += time.time() - t_eval
      if stop_after_step and step >= stop_after_step:
        ckpt.close()
        metrics_log.close()
        return {'step': step, 'stopped': 'stop_after_step'}
    drain(0)

  elapsed = time.time() - t_first - eval_s if t_first else 0.0
  ckpt.save(state, force=True)
  ckpt.wait()
  if 'loss' not in last:  # no step logged by this process (a resumed run at its end)
    last = {'loss': next((r['loss'] for r in reversed(logging_lib.read_metrics(workdir))
                          if 'loss' in r), None)}
  result = {'step': step, 'loss': last['loss'], **result}
  if steps_timed and elapsed > 0:
    result['images_per_s'] = steps_timed * config.batch_size / elapsed
  if stopping():
    log(f'SIGTERM: saved step {step} in {ckpt.directory}; rerun the same command to resume')
    result['stopped'] = 'SIGTERM'
  elif labeled and config.eval.final:
    res = evaluate_now(state, final=True)
    metrics_log.write(step, res)
    result.update(res)
    if is_main and hasattr(method, 'recon_images'):  # MIM pictures (jssl.eval.recon_grid)
      from jssl.eval import recon_grid  # pylint: disable=g-import-not-at-top
      recon_grid.write_for_state(method, state, config, workdir, step, log)
  ckpt.close()
  metrics_log.close()
  if is_main:
    logging_lib.plot_curves(workdir)
    result = strict_json(result)
    try:
      epath.Path(workdir, 'final.json').write_text(json.dumps(result, allow_nan=False))
    except OSError as e:
      raise checkpoint_lib.WriteFailedError(f'writing {workdir}/final.json failed ({e})') from e
  return strict_json(result)


def strict_json(result: dict) -> dict:
  """`result` with every non-finite float (a figure that does not exist) as None, so that
  `json.dumps(..., allow_nan=False)` holds."""
  def clean(v):
    if isinstance(v, float) and not np.isfinite(v):
      return None
    return v
  return {k: clean(v) for k, v in result.items()}
