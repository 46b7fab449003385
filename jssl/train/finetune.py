"""Fine-tuning in the engine: `finetune(config, workdir=None, log) -> dict` (`python -m jssl.finetune`).

config: configs/finetune.py. One linear pass, on the engine's parts:
1. The pre-training run (`config.pretrain_workdir`, read by jssl.train.runs): its config.json
   gives the backbone, the data and the input mean / std; its newest checkpoint (or
   `checkpoint_step`) gives the weights (jssl.train.classifier.load_pretrained). With
   `from_scratch` the same architecture starts from random init (seed `config.seed`).
2. The labelled budget: `labels_per_class` training examples of each class (0: all), drawn once
   with `seed` (`select_labelled`), decoded into host memory at `data.store_size` px (shorter
   side resized, centre crop; 0: the view size up to 64 px, else size / 0.875).
3. Training: `ClassifierMethod` (backbone + linear head, cross-entropy with `label_smoothing`)
   through the engine's jitted `train_step` (jssl.train.step: the non-finite guard, sharded
   batches), `optim.build` (AdamW, warm-up + cosine) with the classifier's weight-decay mask and
   layer-wise lr decay (`optim.layer_decay`), views made on the device
   (`augment_jax.crop_and_flip`: random resized crop `data.crop_scale` / `crop_ratio`, flip).
   Batch k is `batch_indices(n, batch_size, seed, k)`, a pure function of k.
4. With a workdir: the workdir is claimed (jssl.train.workdir), checkpoints are written every
   `checkpoint.every_steps` and a rerun of the same command resumes from the newest readable one
   (the same batches as an uninterrupted run); SIGTERM saves and stops; metrics.jsonl,
   TensorBoard, curves.png and final.json as in pre-training.
5. Evaluation: top-1 of the logits on the run's eval split through its eval recipe
   (`loop.extract`), every `eval.every_epochs` and at the end.
"""

import functools
import json
import os
import time

import jax
import numpy as np
from etils import epath

from jssl.train import checkpoint as checkpoint_lib
from jssl.train import classifier, loop, optim, runs, sharding
from jssl.train import logging as logging_lib
from jssl.train import state as state_lib
from jssl.train import step as step_lib
from jssl.train import workdir as workdir_lib

WHAT = 'config.pretrain_workdir'


def select_labelled(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
  """Sorted indices of `per_class` examples of each class (all when 0 or fewer exist)."""
  labels = np.asarray(labels)
  rng = np.random.default_rng([int(seed), 0x1abe1])
  chosen = []
  for c in np.unique(labels[labels >= 0]):
    idx = np.flatnonzero(labels == c)
    chosen.append(idx if per_class <= 0 else rng.permutation(idx)[:per_class])
  return np.sort(np.concatenate(chosen)).astype(np.int64)


@functools.lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
  return np.random.default_rng([int(seed), 0xF17E, int(epoch)]).permutation(n)


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
  """The examples of 0-based step `step`: the stream of per-epoch permutations of range(n),
  cut into consecutive batches of `batch_size` (a batch may span two epochs)."""
  out, pos = [], int(step) * int(batch_size)
  while sum(len(o) for o in out) < batch_size:
    epoch, offset = divmod(pos, n)
    take = _epoch_order(n, seed, epoch)[offset:offset + batch_size - sum(len(o) for o in out)]
    out.append(take)
    pos += len(take)
  return np.concatenate(out)


def plan(config, num_examples: int) -> dict:
  """Steps per epoch of the labelled budget, total and warm-up steps, the eval period."""
  spe = max(int(round(num_examples / int(config.batch_size))), 1)
  total = int(config.total_steps) or max(int(round(config.total_epochs * spe)), 1)
  every = int(round(config.eval.every_epochs * spe)) if config.eval.every_epochs else 0
  return {'steps_per_epoch': spe, 'total_steps': total, 'eval_every': every,
          'warmup_steps': int(round(config.optim.warmup_epochs * spe))}


def run_data_config(config, run_config):
  """The pre-training run's data block with the fine-tuning config's source / splits."""
  data_cfg = run_config.data.copy_and_resolve_references()
  with data_cfg.unlocked():
    for key in ('source', 'eval_source', 'train_split', 'eval_split'):
      if config.data.get(key, ''):
        data_cfg[key] = config.data[key]
  return data_cfg


def load_budget(config, data_cfg, size: int):
  """`(uint8 images [n, s, s, 3], int32 labels [n], num_classes, store size s)` on the host."""
  from jssl.data import labelled, pipeline  # pylint: disable=g-import-not-at-top (TensorFlow)
  info = pipeline.dataset_info(data_cfg.source, data_cfg.train_split, data_cfg.data_dir)
  num_classes = int(info['num_classes'])
  if num_classes < 2:
    raise ValueError(f'fine-tuning needs labels: {data_cfg.source} has {num_classes} classes')
  store = int(config.data.store_size) or (size if size <= 64 else int(round(size / 0.875)))
  labels_all = labelled.split_labels(data_cfg.source, data_cfg.train_split, data_cfg)
  chosen = select_labelled(labels_all, int(config.labels_per_class), int(config.seed))
  images, labels = labelled.load_images(data_cfg, data_cfg.source, data_cfg.train_split, chosen,
                                        store)
  return images, labels, num_classes, store


def build(config, run_config, num_classes: int, size: int, store: int, p: dict, mesh):
  """`(method, tx, schedule, state, train_step, logits_fn)`: the engine for fine-tuning."""
  backbone = classifier.backbone_from_run(run_config, config.drop_path_rate, config.pool,
                                          f'{WHAT}={config.pretrain_workdir!r}')
  method = classifier.ClassifierMethod(
      classifier.Classifier(backbone, num_classes), num_classes, size, store,
      tuple(run_config.model.mean), tuple(run_config.model.std), float(config.label_smoothing))
  shapes = jax.eval_shape(lambda: method.init(jax.random.PRNGKey(0), None)[0])
  scales = classifier.lr_scales(shapes, run_config.model, config.optim.layer_decay)
  tx, schedule = optim.build(config.optim, config.batch_size, p['total_steps'],
                             p['warmup_steps'], mask=classifier.decay_mask, scales=scales)
  repl = sharding.replicated(mesh)
  state = state_lib.create(method, tx, int(config.seed), out_sharding=repl)
  d = config.data

  def views(batch, rng):
    from jssl.data import augment_jax  # pylint: disable=g-import-not-at-top
    return {'view_0': augment_jax.crop_and_flip(rng, batch['image'], size, tuple(d.crop_scale),
                                                tuple(d.crop_ratio), float(d.flip_p)),
            'label': batch['label']}
  return (method, tx, schedule, state, step_lib.make_train_step(method, tx, mesh, schedule, views),
          step_lib.make_features_fn(method, mesh))


def top1(logits_fn, state, data_cfg, batch_size: int, mesh) -> tuple:
  """`(top-1, number of examples)` of the logits on the eval split."""
  from jssl.data import pipeline  # pylint: disable=g-import-not-at-top (TensorFlow)
  batches = pipeline.eval_iterator(data_cfg, batch_size, process_index=jax.process_index(),
                                   process_count=jax.process_count())
  logits, labels = loop.extract(logits_fn, state, batches, mesh)
  return float(np.mean(np.argmax(logits, -1) == labels)), len(labels)


def finetune(config, workdir=None, log=print) -> dict:
  """Fine-tunes (or resumes; see the module docstring); returns the final figures."""
  if not config.pretrain_workdir:
    raise ValueError(f'{WHAT} is empty: name the pre-training run whose backbone is fine-tuned '
                     '(with from_scratch its architecture is trained from random init)')
  release = None
  if workdir and jax.process_index() == 0:
    release = workdir_lib.claim(workdir, config, log)
  try:
    return _finetune(config, workdir, log)
  finally:
    if release is not None:
      release()


def _finetune(config, workdir, log) -> dict:
  t0, is_main = time.time(), jax.process_index() == 0
  run_config = runs.read_config(config.pretrain_workdir, WHAT)
  arrays = None if config.from_scratch else runs.restore_arrays(
      config.pretrain_workdir, int(config.checkpoint_step) or None, WHAT)
  data_cfg = run_data_config(config, run_config)
  size = int(run_config.data.augment.get('image_size', None) or run_config.data.image_size)
  images, labels, num_classes, store = load_budget(config, data_cfg, size)
  n, b = len(labels), int(config.batch_size)
  p = plan(config, n)
  total = p['total_steps']
  mesh = sharding.make_mesh()
  sharding.check_batch_size(b, mesh)
  sharding.check_batch_size(int(config.eval.batch_size), mesh, 'eval.batch_size')
  method, _, schedule, state, train_step, logits_fn = build(config, run_config, num_classes, size,
                                                            store, p, mesh)
  del method
  repl = sharding.replicated(mesh)
  if arrays is not None:
    params, stats = classifier.load_pretrained(jax.device_get(state.params),
                                               jax.device_get(state.batch_stats), arrays,
                                               config.pretrain_workdir)
    state = state.replace(params=jax.device_put(params, repl),
                          batch_stats=jax.device_put(stats, repl))
  ckpt = None
  if workdir:
    c = config.checkpoint
    ckpt = checkpoint_lib.Checkpointer(os.path.join(workdir, 'checkpoints'), c.every_steps,
                                       c.keep, c.use_async)
    if ckpt.latest_step() is not None:
      state = ckpt.restore_newest_readable(state, log)
      log(f'resumed from step {int(state.step)} ({ckpt.directory})')
  step = int(jax.device_get(state.step))
  if workdir and step >= total and epath.Path(workdir, 'final.json').exists():
    ckpt.close()
    log(f'{workdir} holds a finished fine-tuning run (step {step} of {total}): nothing to do')
    return json.loads(epath.Path(workdir, 'final.json').read_text())
  log(f'fine-tuning {run_config.model.name} of {config.pretrain_workdir} '
      f'({"from scratch" if arrays is None else "pre-trained, step " + str(arrays["step"])})'
      f' on {n} labelled examples ({config.labels_per_class or "all"} per class), {total} steps '
      f'of {b}')

  from jssl.data import feeding  # pylint: disable=g-import-not-at-top
  metrics_log = logging_lib.MetricsLog(workdir, is_main, config.log.tensorboard) if workdir \
      else None
  progress = logging_lib.Progress(total, p['steps_per_epoch'], b, step)
  rows = b // jax.process_count()
  first = jax.process_index() * rows
  pending, last, vote = [], {}, loop.stop_vote(mesh)
  paced = None  # (step, time) after the first step: the pace leaves out start-up and compile
  with loop.StopRequest() as stop:
    while step < total:
      if (bool(jax.device_get(vote(stop.requested))) if vote else stop.requested):
        break
      idx = batch_indices(n, b, int(config.seed), step)[first:first + rows]
      batch = feeding.global_batch({'image': images[idx], 'label': labels[idx]}, mesh)
      state, metrics = train_step(state, batch)
      step += 1
      if paced is None:  # the first step of this process compiles: the pace starts after it
        jax.block_until_ready(metrics)
        paced = (step, time.time())
      pending.append((step, metrics))
      save_due = ckpt is not None and step % ckpt.every_steps == 0
      if step % int(config.log.every_steps) == 0 or step == total or save_due:
        host = jax.device_get(pending)
        pending = []
        bad = [s for s, m in host if float(m['finite']) != 1.0]
        if bad:
          raise loop.NonFiniteError(f'non-finite loss or gradients at fine-tuning step {bad[0]}:'
                                    ' that step was not applied; lower optim.lr or clip_norm')
        last = {k: float(np.mean([m[k] for _, m in host])) for k in host[0][1] if k != 'finite'}
        last['epoch'] = step / p['steps_per_epoch']
        if metrics_log:
          metrics_log.write(step, last)
        log(progress.line(step, last))
      if save_due:
        ckpt.save(state)
      if p['eval_every'] and step % p['eval_every'] == 0 and step < total:
        acc, _ = top1(logits_fn, state, data_cfg, int(config.eval.batch_size), mesh)
        if metrics_log:
          metrics_log.write(step, {'top1': acc})
        log(f'step {step}: top-1 {acc:.4f}')
        progress.restart_clock(step)
    stopped = step < total
  pace = (step - paced[0]) / (time.time() - paced[1]) if paced and step > paced[0] else None
  if ckpt is not None:
    ckpt.save(state, force=True)
    ckpt.close()
  if stopped:
    log(f'SIGTERM: saved step {step}; rerun the same command to resume')
    return {'step': step, 'stopped': 'SIGTERM'}
  acc, count = top1(logits_fn, state, data_cfg, int(config.eval.batch_size), mesh)
  if 'loss' not in last and workdir:  # a resumed run at its end: its last logged loss
    last = next((r for r in reversed(logging_lib.read_metrics(workdir)) if 'loss' in r), {})
  result = loop.strict_json({
      'top1': acc, 'eval_examples': count, 'from_scratch': bool(config.from_scratch),
      'loaded_pretrained': arrays is not None, 'pretrain_workdir': config.pretrain_workdir,
      'pretrain_method': run_config.method.name,
      'pretrain_step': arrays['step'] if arrays is not None else 0,
      'model': run_config.model.name, 'labels_per_class': int(config.labels_per_class),
      'train_examples': n, 'step': step, 'steps': total, 'epochs': total / p['steps_per_epoch'],
      'loss': last.get('loss'), 'seconds': round(time.time() - t0, 1),
      'steps_per_s': pace})
  if metrics_log:
    metrics_log.write(step, {'top1': acc})
    metrics_log.close()
  if workdir and is_main:
    logging_lib.plot_curves(workdir)
    epath.Path(workdir, 'final.json').write_text(json.dumps(result, allow_nan=False))
  return result
