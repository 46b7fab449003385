"""End-to-end fine-tuning of a pre-trained backbone on a labelled budget (`jssl.finetune`).

`run(config, workdir=None, log=print) -> dict` (config: configs/finetune.py):
1. The pre-training run (`config.pretrain_workdir`): its config.json gives the backbone (a ViT
   or a ResNet, as `config.model` describes it), the data and the input mean / std; its newest
   orbax checkpoint (or `checkpoint_step`) gives the weights: `params['encoder']` (MAE, SimMIM,
   BEiT) or `params['backbone']` (+ its batch_stats; SimCLR, BYOL, DINO...). With
   `from_scratch` the same architecture starts from random init (seed `config.seed`), for the
   comparison. A ViT loses its mask token (unused) and gets `drop_path_rate`.
2. The labelled budget: `labels_per_class` training examples of each class (0: all), drawn once
   with `seed` from the run's training split, decoded into host memory at `store_size` px
   (shorter side resized, centre crop; 0: the view size up to 64 px, else size / 0.875).
3. Training: the backbone + a linear head (on the ViT's pooled token or the ResNet's pooled
   features), cross-entropy with `label_smoothing`, AdamW with linear warm-up and cosine decay,
   layer-wise lr decay as in BEiT / MAE (`layer_decay`: the parameters of layer i of L get
   `lr * layer_decay ** (L + 1 - i)`, with the patch embedding, CLS and mask tokens (ResNet: the
   stem) layer 0, block i (ResNet: stage i) layer i + 1 (i), the final norm and the head L + 1),
   weight decay on weights only (not biases, norms, CLS / mask tokens), optional gradient
   clipping. Views: a random resized crop (`crop_scale`, `crop_ratio`; the box clipped to the
   image) and a horizontal flip, made on the device (jax.image.scale_and_translate, bilinear,
   antialiased). The step is jitted over all devices (parameters replicated, the batch sharded).
4. Evaluation: top-1 on the run's eval split through its eval recipe, every `eval_every_epochs`
   and at the end. Returns (and writes workdir/final.json, metrics.jsonl) the figures.

Helpers used elsewhere: `read_run_config`, `restore_run_arrays`, `lr_scales`, `layer_ids`.
"""

import functools
import json
import math
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jssl import models
from jssl.train import optim as optim_lib
from jssl.train import runs
from jssl.train import sharding


def read_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The pre-training run's ConfigDict (jssl.train.runs.read_config)."""
  return runs.read_config(workdir, 'config.pretrain_workdir')


def restore_run_arrays(workdir: str, step: int = 0) -> dict:
  """The pre-training run's checkpoint as numpy arrays (jssl.train.runs.restore_arrays)."""
  return runs.restore_arrays(workdir, step or None, 'config.pretrain_workdir')


# ------------------------------------------------------------------------------------- model

class Classifier(nn.Module):
  """`backbone` (ViT: its 'pooled' output; ResNet: its features) -> Dense(num_classes) 'head'."""
  backbone: nn.Module
  num_classes: int

  @nn.compact
  def __call__(self, x, train: bool = True):
    out = self.backbone(x, train)
    h = out['pooled'] if isinstance(out, dict) else out
    return nn.Dense(self.num_classes, kernel_init=nn.initializers.normal(2e-5),
                    dtype=jnp.float32, name='head')(jnp.asarray(h, jnp.float32))


def is_vit(model_cfg) -> bool:
  return str(model_cfg.name).startswith('vit')


def backbone_from_run(run_config, config) -> nn.Module:
  """The pre-training run's backbone, as fine-tuning uses it (no mask token, drop path)."""
  model_cfg = run_config.model.copy_and_resolve_references()
  if is_vit(model_cfg):
    with model_cfg.unlocked():
      model_cfg.drop_path_rate = float(config.drop_path_rate)
      if config.get('pool', ''):
        model_cfg.pool = config.pool
  if is_vit(model_cfg) or model_cfg.name in models.STAGES:
    return models.from_config(model_cfg)
  raise ValueError(f'fine-tuning supports ViT and ResNet backbones; the run at '
                   f'{config.pretrain_workdir!r} has config.model.name={model_cfg.name!r}')


def pretrained_backbone(arrays: dict, workdir: str):
  """`(params, batch_stats)` of the backbone inside a restored run's arrays."""
  params, stats = arrays['params'], arrays['batch_stats']
  if 'encoder' in params:  # MAE / SimMIM / BEiT: the ViT encoder
    return params['encoder'], {}
  if 'backbone' in params:  # SimCLR, BYOL, MoCo, DINO...: backbone (+ projector...)
    return params['backbone'], (stats.get('backbone', {}) if isinstance(stats, dict) else {})
  raise ValueError(f'no backbone in the checkpoint of {workdir!r}: its params hold '
                   f'{sorted(params)}, expected "encoder" or "backbone"')


def _path_str(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)


def load_into(target, source, what: str):
  """`target`'s tree with every leaf taken from `source` at the same path (same shape). Leaves
  only `source` has (a mask token, an MAE's unused parts) are dropped; a missing or mis-shaped
  one raises ValueError naming it."""
  flat = {_path_str(p): v for p, v in jax.tree_util.tree_flatten_with_path(source)[0]}

  def take(path, leaf):
    key = _path_str(path)
    if key not in flat:
      raise ValueError(f'{what}: the checkpoint has no {key!r}')
    if tuple(np.shape(flat[key])) != tuple(np.shape(leaf)):
      raise ValueError(f'{what}: {key!r} has shape {np.shape(flat[key])} in the checkpoint, '
                       f'{np.shape(leaf)} in the fine-tuning model')
    return jnp.asarray(flat[key], jnp.asarray(leaf).dtype)
  return jax.tree_util.tree_map_with_path(take, target)


@functools.lru_cache(maxsize=4)
def _init_fn(model, size: int):
  x = jnp.zeros((2, size, size, 3), jnp.float32)
  return jax.jit(lambda rng: model.init(rng, x, False))


def init_model(config, run_config, num_classes: int, arrays=None):
  """`(model, params, batch_stats, loaded)`: the classifier, its initial variables (the
  pre-trained backbone unless `from_scratch` or arrays is None) and whether weights were loaded."""
  backbone = backbone_from_run(run_config, config)
  model = Classifier(backbone, num_classes)
  size = int(run_config.data.augment.get('image_size', None) or run_config.data.image_size)
  variables = _init_fn(model, size)(jax.random.PRNGKey(int(config.seed)))
  params = dict(variables['params'])
  stats = dict(variables.get('batch_stats', {}))
  loaded = False
  if arrays is not None and not config.from_scratch:
    bb_params, bb_stats = pretrained_backbone(arrays, config.pretrain_workdir)
    params['backbone'] = load_into(params['backbone'], bb_params, 'backbone params')
    if 'backbone' in stats:
      stats['backbone'] = load_into(stats['backbone'], bb_stats, 'backbone batch_stats')
    loaded = True
  return model, params, stats, loaded


# ------------------------------------------------------------------------------- optimizer

def layer_ids(params, model_cfg) -> tuple:
  """`(tree of layer ids, L + 1)`: the id of every leaf for layer-wise lr decay (module doc)."""
  if is_vit(model_cfg):
    depth = max(int(k[len('block'):]) for k in params['backbone'] if k.startswith('block')) + 1
  else:
    depth = max(int(k[len('stage'):].split('_')[0]) for k in params['backbone']
                if k.startswith('stage'))
  top = depth + 1

  def layer(path, _):
    names = [str(getattr(k, 'key', getattr(k, 'name', k))) for k in path]
    if names[0] != 'backbone' or len(names) < 2:
      return top
    name = names[1]
    if is_vit(model_cfg):
      if name.startswith('block'):
        return int(name[len('block'):]) + 1
      return top if name == 'norm' else 0  # patch_embed, cls, mask_token: 0
    if name.startswith('stage'):
      return int(name[len('stage'):].split('_')[0])
    return 0  # the stem
  return jax.tree_util.tree_map_with_path(layer, params), top


def lr_scales(params, model_cfg, layer_decay: float):
  """The lr multiplier of every leaf: `layer_decay ** (L + 1 - layer id)` (1 for the head)."""
  ids, top = layer_ids(params, model_cfg)
  return jax.tree.map(lambda i: float(layer_decay) ** (top - i), ids)


def decay_mask(params):
  """Weight decay on weights only: not biases, norms, 1-D leaves, CLS or mask tokens."""
  base = optim_lib.decay_mask(params)

  def keep(path, leaf, decayed):
    names = [str(getattr(k, 'key', getattr(k, 'name', k))) for k in path]
    return bool(decayed) and np.ndim(leaf) > 1 and names[-1] not in ('cls', 'mask_token')
  return jax.tree_util.tree_map_with_path(keep, params, base)


def scale_by_tree(scales) -> optax.GradientTransformation:
  """Multiplies each update by its leaf of `scales` (a per-parameter learning-rate factor)."""
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, s: u * s, updates, scales), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def make_optimizer(config, params, model_cfg, total_steps: int, warmup_steps: int):
  """`(tx, schedule)`: [clip ->] AdamW (warm-up + cosine, masked decay) -> layer-wise lr scales.
  Scaling AdamW's whole update (its decay term included) by s is AdamW at lr * s, as BEiT's and
  MAE's per-group learning rates are."""
  o = config.optim
  peak = optim_lib.scaled_lr(o.lr, config.batch_size, o.lr_scaling)
  warmup = min(int(warmup_steps), max(total_steps - 1, 0))
  schedule = optax.warmup_cosine_decay_schedule(0.0, peak, warmup, max(total_steps, 1),
                                                end_value=peak * o.end_lr_factor)
  parts = []
  if o.clip_norm and o.clip_norm > 0:
    parts.append(optax.clip_by_global_norm(o.clip_norm))
  parts.append(optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                           mask=decay_mask(params)))
  parts.append(scale_by_tree(lr_scales(params, model_cfg, o.layer_decay)))
  return optax.chain(*parts), schedule


# ------------------------------------------------------------------------------------ data

def select_labelled(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
  """Sorted indices of `per_class` examples of each class (all when 0 or fewer exist)."""
  labels = np.asarray(labels)
  rng = np.random.default_rng([int(seed), 0x1abe1])
  chosen = []
  for c in np.unique(labels[labels >= 0]):
    idx = np.flatnonzero(labels == c)
    chosen.append(idx if per_class <= 0 else rng.permutation(idx)[:per_class])
  return np.sort(np.concatenate(chosen)).astype(np.int64)


def random_resized_crop(rng, image, size: int, scale, ratio):
  """One float image `[H, W, 3]` -> `[size, size, 3]`: a box of area fraction ~U(scale) and
  log-uniform aspect ratio (clipped to the image), resized bilinearly with antialiasing."""
  h, w = image.shape[0], image.shape[1]
  k_area, k_ratio, k_top, k_left = jax.random.split(rng, 4)
  area = h * w * jax.random.uniform(k_area, (), minval=scale[0], maxval=scale[1])
  r = jnp.exp(jax.random.uniform(k_ratio, (), minval=math.log(ratio[0]),
                                 maxval=math.log(ratio[1])))
  bw = jnp.clip(jnp.sqrt(area * r), 1.0, w)
  bh = jnp.clip(jnp.sqrt(area / r), 1.0, h)
  top = jax.random.uniform(k_top, ()) * (h - bh)
  left = jax.random.uniform(k_left, ()) * (w - bw)
  s = jnp.stack([size / bh, size / bw])
  t = jnp.stack([-top * size / bh, -left * size / bw])
  return jax.image.scale_and_translate(image, (size, size, image.shape[2]), (0, 1), s, t,
                                       'linear', antialias=True)


def augment(rng, images_u8, size: int, scale, ratio, flip_p: float):
  """uint8 `[N, H, W, 3]` -> float32 views in [0, 1] (random resized crop + flip), per example."""
  x = jnp.asarray(images_u8, jnp.float32) / 255.0
  n = x.shape[0]
  k_crop, k_flip = jax.random.split(rng)
  x = jax.vmap(lambda k, im: random_resized_crop(k, im, size, scale, ratio))(
      jax.random.split(k_crop, n), x)
  flip = jax.random.uniform(k_flip, (n, 1, 1, 1)) < flip_p
  return jnp.clip(jnp.where(flip, x[:, :, ::-1], x), 0.0, 1.0)


# ------------------------------------------------------------------------------------- run

def make_steps(model, tx, config, mean, std, size: int, num_classes: int, mesh):
  """Jitted `train_step(state, images_u8, labels, rng) -> (state, metrics)` and
  `predict(params, batch_stats, images) -> logits` over `mesh`."""
  d = config.data
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  smoothing = float(config.label_smoothing)

  def train_step(state, images, labels, rng):
    aug_rng, drop_rng = jax.random.split(jax.random.fold_in(rng, state['step']))
    x = (augment(aug_rng, images, size, tuple(d.crop_scale), tuple(d.crop_ratio),
                 float(d.flip_p)) - mean) / std

    def loss_fn(params):
      variables = {'params': params, 'batch_stats': state['batch_stats']}
      logits, updates = model.apply(variables, x, True, rngs={'dropout': drop_rng},
                                    mutable=['batch_stats'])
      targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), smoothing)
      loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
      acc = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
      return loss, (updates.get('batch_stats', state['batch_stats']), acc)

    (loss, (stats, acc)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state['params'])
    updates, opt_state = tx.update(grads, state['opt_state'], state['params'])
    params = optax.apply_updates(state['params'], updates)
    new = {'params': params, 'batch_stats': stats, 'opt_state': opt_state,
           'step': state['step'] + 1}
    return new, {'loss': loss, 'train_acc': acc, 'grad_norm': optax.tree.norm(grads)}

  def predict(params, batch_stats, images):
    x = (jnp.asarray(images, jnp.float32) - mean) / std
    return model.apply({'params': params, 'batch_stats': batch_stats}, x, False)

  repl, data = sharding.replicated(mesh), sharding.data_sharding(mesh)
  return (jax.jit(train_step, in_shardings=(repl, data, data, repl), out_shardings=(repl, repl),
                  donate_argnums=(0,)),
          jax.jit(predict, in_shardings=(repl, repl, data), out_shardings=data))


def evaluate_top1(predict, state, batches, mesh) -> tuple:
  """`(top-1, number of examples)` over eval `batches` ({view_0, label, valid})."""
  correct, count = 0, 0
  for b in batches:
    logits = predict(state['params'], state['batch_stats'],
                     jax.device_put(b['view_0'], sharding.data_sharding(mesh)))
    pred = np.argmax(np.asarray(jax.device_get(logits)), -1)
    valid = np.asarray(b['valid'], bool)
    correct += int(np.sum((pred == np.asarray(b['label'])) & valid))
    count += int(valid.sum())
  return correct / max(count, 1), count


def run(config, workdir=None, log=print) -> dict:
  """Fine-tunes (see the module docstring); returns the final figures."""
  t0 = time.time()
  if not config.pretrain_workdir:
    raise ValueError('config.pretrain_workdir is empty: name the pre-training run whose backbone '
                     'is fine-tuned (with from_scratch its architecture is trained from random '
                     'init)')
  run_config = read_run_config(config.pretrain_workdir)
  arrays = None if config.from_scratch else restore_run_arrays(config.pretrain_workdir,
                                                               int(config.checkpoint_step))
  data_cfg = run_config.data.copy_and_resolve_references()
  with data_cfg.unlocked():
    for key in ('source', 'eval_source', 'train_split', 'eval_split'):
      if config.data.get(key, ''):
        data_cfg[key] = config.data[key]
  from jssl.data import pipeline  # pylint: disable=g-import-not-at-top (TensorFlow)
  info = pipeline.dataset_info(data_cfg.source, data_cfg.train_split, data_cfg.data_dir)
  num_classes = int(info['num_classes'])
  if num_classes < 2:
    raise ValueError(f'fine-tuning needs labels: {data_cfg.source} has {num_classes} classes')
  size = int(run_config.data.augment.get('image_size', None) or run_config.data.image_size)
  store = int(config.data.store_size) or (size if size <= 64 else int(round(size / 0.875)))

  from jssl.data import labelled  # pylint: disable=g-import-not-at-top (TensorFlow)
  labels_all = labelled.split_labels(data_cfg.source, data_cfg.train_split, data_cfg)
  chosen = select_labelled(labels_all, int(config.labels_per_class), int(config.seed))
  images, labels = labelled.load_images(data_cfg, data_cfg.source, data_cfg.train_split, chosen,
                                        store)
  n = len(labels)
  b = int(config.batch_size)
  spe = max(int(round(n / b)), 1)
  total = int(config.total_steps) or max(int(round(config.total_epochs * spe)), 1)
  warmup = int(round(config.optim.warmup_epochs * spe))
  log(f'fine-tuning {run_config.model.name} of {config.pretrain_workdir} '
      f'({"from scratch" if config.from_scratch else "pre-trained, step " + str(arrays["step"])})'
      f' on {n} labelled examples ({config.labels_per_class or "all"} per class), {total} steps '
      f'of {b}')

  mesh = sharding.make_mesh()
  sharding.check_batch_size(b, mesh)
  sharding.check_batch_size(int(config.eval_batch_size), mesh, 'eval_batch_size')
  model, params, stats, loaded = init_model(config, run_config, num_classes, arrays)
  tx, schedule = make_optimizer(config, params, run_config.model, total, warmup)
  repl = sharding.replicated(mesh)
  state = jax.device_put({'params': params, 'batch_stats': stats, 'opt_state': tx.init(params),
                          'step': jnp.zeros((), jnp.int32)}, repl)
  mean, std = tuple(run_config.model.mean), tuple(run_config.model.std)
  train_step, predict = make_steps(model, tx, config, mean, std, size, num_classes, mesh)

  def eval_batches():
    return pipeline.eval_iterator(data_cfg, int(config.eval_batch_size))

  rng = jax.device_put(jax.random.PRNGKey(int(config.seed) + 1), repl)
  records, sums, n_acc = [], {}, 0
  eval_every = int(round(config.eval_every_epochs * spe)) if config.eval_every_epochs else 0
  order = np.zeros([0], np.int64)
  epoch = 0
  for step in range(1, total + 1):
    while len(order) < b:  # a stream of per-epoch permutations of the labelled set
      perm = np.random.default_rng([int(config.seed), 0xF17E, epoch]).permutation(n)
      order = np.concatenate([order, perm])
      epoch += 1
    idx, order = order[:b], order[b:]
    batch = jax.device_put((images[idx], labels[idx]), sharding.data_sharding(mesh))
    state, metrics = train_step(state, batch[0], batch[1], rng)
    for k, v in metrics.items():
      sums[k] = sums.get(k, 0.0) + float(v)
    n_acc += 1
    if step % int(config.log_every_steps) == 0 or step == total:
      rec = {'step': step, 'lr': float(schedule(step - 1)),
             **{k: v / n_acc for k, v in sums.items()}}
      records.append(rec)
      log(f'step {step}/{total}: ' + ', '.join(f'{k} {v:.4g}' for k, v in rec.items()
                                                if k != 'step'))
      sums, n_acc = {}, 0
    if eval_every and step % eval_every == 0 and step < total:
      top1, _ = evaluate_top1(predict, state, eval_batches(), mesh)
      records.append({'step': step, 'top1': top1})
      log(f'step {step}: top-1 {top1:.4f}')
  top1, count = evaluate_top1(predict, state, eval_batches(), mesh)
  result = {'top1': top1, 'eval_examples': count, 'from_scratch': bool(config.from_scratch),
            'loaded_pretrained': loaded, 'pretrain_workdir': config.pretrain_workdir,
            'pretrain_method': run_config.method.name,
            'pretrain_step': arrays['step'] if arrays is not None else 0,
            'model': run_config.model.name, 'labels_per_class': int(config.labels_per_class),
            'train_examples': n, 'steps': total, 'epochs': total / spe,
            'loss': next((r['loss'] for r in reversed(records) if 'loss' in r), float('nan')),
            'seconds': round(time.time() - t0, 1)}
  records.append({'step': total, 'top1': top1})
  if workdir and jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
      f.writelines(json.dumps(r) + '\n' for r in records)
    with open(os.path.join(workdir, 'final.json'), 'w') as f:
      json.dump(result, f)
  return result


__all__ = ['run', 'read_run_config', 'restore_run_arrays', 'init_model', 'layer_ids',
           'lr_scales', 'make_optimizer', 'select_labelled']
