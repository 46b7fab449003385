"""A pre-training run's backbone with a linear head, as a `Method` the engine trains (fine-tuning).

- `Classifier(backbone, num_classes)`: the backbone (ViT: its 'pooled' output; ResNet: its
  features) -> Dense(num_classes) 'head'.
- `ClassifierMethod`: the method interface (jssl.methods.base) for supervised training of it:
  batches `{view_0: float32 views in [0, 1], label}`, cross-entropy with label smoothing;
  `features` gives the logits (the evaluator's top-1 reads them).
- `backbone_from_run(run_config, drop_path_rate, pool)`: the run's backbone as fine-tuning uses
  it (models.from_config; a ViT gets drop path, and its mask token stays unused).
- `load_pretrained(params, batch_stats, arrays, workdir)`: the backbone leaves taken from a
  restored run (`params['encoder']` of MAE / SimMIM / BEiT, `params['backbone']` + its
  batch_stats of SimCLR, BYOL, DINO...); a missing or mis-shaped leaf raises naming it.
- Layer-wise lr decay as in BEiT / MAE (`lr_scales`): the parameters of layer i of L get
  `layer_decay ** (L + 1 - i)`, with the patch embedding, CLS and mask tokens (ResNet: the stem)
  layer 0, block i (ResNet: stage i) layer i + 1 (i), the final norm and the head L + 1.
- `decay_mask`: weight decay on weights only (not biases, norms, 1-D leaves, CLS or mask tokens).
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jssl import models
from jssl.methods import base
from jssl.train import optim


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


def backbone_from_run(run_config, drop_path_rate: float = 0.0, pool: str = '',
                      what: str = 'the pre-training run') -> nn.Module:
  """The run's backbone, as fine-tuning uses it (a ViT with `drop_path_rate`, `pool` if set)."""
  model_cfg = run_config.model.copy_and_resolve_references()
  if is_vit(model_cfg):
    with model_cfg.unlocked():
      model_cfg.drop_path_rate = float(drop_path_rate)
      if pool:
        model_cfg.pool = pool
  if is_vit(model_cfg) or model_cfg.name in models.STAGES:
    return models.from_config(model_cfg)
  raise ValueError(f'fine-tuning supports ViT and ResNet backbones; {what} has '
                   f'config.model.name={model_cfg.name!r}')


@dataclasses.dataclass(frozen=True)
class ClassifierMethod(base.Method):
  """Supervised training of `model` (a Classifier) on views made by the step's augment_fn."""
  model: nn.Module
  num_classes: int
  image_size: int
  store_size: int
  mean: tuple
  std: tuple
  label_smoothing: float = 0.0
  name: str = 'classifier'

  def input_spec(self):
    return {'image': ((self.store_size, self.store_size, 3), np.uint8), 'label': ((), np.int32)}

  def init(self, rng, batch):
    del batch
    x = jnp.zeros((2, self.image_size, self.image_size, 3), jnp.float32)
    variables = self.model.init(rng, x, False)
    return dict(variables['params']), dict(variables.get('batch_stats', {})), {}

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    del step
    logits, updates = self.model.apply({'params': params, 'batch_stats': batch_stats},
                                       self.normalize(batch['view_0']), True,
                                       rngs={'dropout': rng}, mutable=['batch_stats'])
    labels = batch['label']
    targets = optax.smooth_labels(jax.nn.one_hot(labels, self.num_classes),
                                  self.label_smoothing)
    loss = jnp.mean(optax.softmax_cross_entropy(logits, targets))
    acc = jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))
    return loss, (updates.get('batch_stats', batch_stats), method_state, {'train_acc': acc})

  def features(self, params, batch_stats, images):
    """The logits, in inference mode."""
    return self.model.apply({'params': params, 'batch_stats': batch_stats},
                            self.normalize(images), False)


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
    return np.asarray(flat[key], np.asarray(leaf).dtype)
  return jax.tree_util.tree_map_with_path(take, target)


def load_pretrained(params: dict, batch_stats: dict, arrays: dict, workdir: str):
  """`(params, batch_stats)` with the backbone taken from a restored run's `arrays`."""
  run_params, run_stats = arrays['params'], arrays['batch_stats']
  if 'encoder' in run_params:  # MAE / SimMIM / BEiT: the ViT encoder
    bb_params, bb_stats = run_params['encoder'], {}
  elif 'backbone' in run_params:  # SimCLR, BYOL, MoCo, DINO...: backbone (+ projector...)
    bb_params = run_params['backbone']
    bb_stats = run_stats.get('backbone', {}) if isinstance(run_stats, dict) else {}
  else:
    raise ValueError(f'no backbone in the checkpoint of {workdir!r}: its params hold '
                     f'{sorted(run_params)}, expected "encoder" or "backbone"')
  params = dict(params, backbone=load_into(params['backbone'], bb_params, 'backbone params'))
  if 'backbone' in batch_stats:
    batch_stats = dict(batch_stats, backbone=load_into(batch_stats['backbone'], bb_stats,
                                                       'backbone batch_stats'))
  return params, batch_stats


def layer_ids(params, model_cfg) -> tuple:
  """`(tree of layer ids, L + 1)`: the id of every leaf for layer-wise lr decay (module doc)."""
  vit = is_vit(model_cfg)
  if vit:
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
    if vit:
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
  base_mask = optim.decay_mask(params)

  def keep(path, leaf, decayed):
    names = [str(getattr(k, 'key', getattr(k, 'name', k))) for k in path]
    return bool(decayed) and np.ndim(leaf) > 1 and names[-1] not in ('cls', 'mask_token')
  return jax.tree_util.tree_map_with_path(keep, params, base_mask)
