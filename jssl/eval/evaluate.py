"""The evaluation the trainer's monitor and `python -m jssl.eval` run: kNN, linear probe, baselines.

The train split's features form the kNN bank (and the probe's training set); the eval split's
features are the queries (and the probe's test set).
"""

from typing import Callable, Iterable, Mapping, Optional

import ml_collections
import numpy as np

from jssl.eval import features as features_lib
from jssl.eval import knn as knn_lib
from jssl.eval import linear_probe as probe_lib


def eval_config() -> ml_collections.ConfigDict:
  """Defaults of the `config.eval` block.

  `max_train_examples` caps the kNN bank / probe training set (0: the whole train split), with
  the kept batches spread over the split when its iterator has a `len()` (class-ordered folders
  stay balanced; see `features.spread_batches`); the online monitor uses a cap to stay cheap,
  the offline CLI uses everything.
  """
  c = ml_collections.ConfigDict()
  c.every_epochs = 10  # online monitor period, in epochs (0: off)
  c.knn_k = (20, 200)
  c.knn_temperature = 0.07
  c.knn_batch_size = 256  # test rows per kNN chunk
  c.max_train_examples = 0
  c.linear_probe = False
  # Collapse diagnostics (jssl.methods.collapse) of the backbone features of a fixed probe of
  # `collapse_examples` eval images, spread over the split, at the logged steps that are
  # multiples of `collapse_every_steps` (0: off); every kNN evaluation reports them too.
  c.collapse_every_steps = 50
  c.collapse_examples = 512
  c.linear = ml_collections.ConfigDict()
  c.linear.epochs = 10
  c.linear.batch_size = 256
  c.linear.optimizer = 'adamw'  # 'adamw' or 'sgd' (momentum)
  c.linear.lr = 1e-3
  c.linear.momentum = 0.9  # sgd only
  c.linear.weight_decay = 0.0
  c.linear.warmup_epochs = 0
  c.linear.standardize = True
  c.linear.seed = 0
  return c


def _knn(train_feats, train_labels, eval_feats, eval_labels, num_classes, cfg, prefix='knn_top1'):
  """`{prefix}_k{k}` for each k, and `prefix` itself = the first k's accuracy."""
  res = knn_lib.weighted_knn(train_feats, train_labels, eval_feats, eval_labels,
                             num_classes=num_classes, k=tuple(cfg.knn_k),
                             temperature=cfg.knn_temperature, batch_size=cfg.knn_batch_size)
  out = {f'{prefix}_k{k}': res[f'knn_top1_k{k}'] for k in cfg.knn_k}
  out[prefix] = out[f'{prefix}_k{cfg.knn_k[0]}']
  return out


def evaluate_features(train_feats, train_labels, eval_feats, eval_labels, *, num_classes: int,
                      eval_cfg: ml_collections.ConfigDict) -> dict:
  """kNN (and, if `eval_cfg.linear_probe`, the linear probe) on precomputed features."""
  out = _knn(train_feats, train_labels, eval_feats, eval_labels, num_classes, eval_cfg)
  if eval_cfg.linear_probe:
    out.update(probe_lib.linear_probe(
        train_feats, train_labels, eval_feats, eval_labels, num_classes=num_classes,
        **eval_cfg.linear.to_dict()))
  return out


def evaluate(features_fn: Callable, train_batches: Iterable[Mapping],
             eval_batches: Iterable[Mapping], *, num_classes: int,
             eval_cfg: ml_collections.ConfigDict, image_key: str = 'view_0') -> dict:
  """Frozen-feature evaluation of `features_fn(images [B, H, W, 3]) -> [B, F]`.

  Returns a flat dict: `knn_top1` (= the first k, 20 by default), `knn_top1_k{k}` for each k,
  and `linear_top1`, `linear_train_top1` when the probe runs; plus `num_train`, `num_eval`.
  """
  max_train = eval_cfg.max_train_examples or None
  train_feats, train_labels = features_lib.extract_features(
      features_fn, train_batches, image_key=image_key, max_examples=max_train)
  eval_feats, eval_labels = features_lib.extract_features(
      features_fn, eval_batches, image_key=image_key)
  out = evaluate_features(train_feats, train_labels, eval_feats, eval_labels,
                          num_classes=num_classes, eval_cfg=eval_cfg)
  out.update(num_train=int(train_labels.shape[0]), num_eval=int(eval_labels.shape[0]))
  return out


def baselines(raw_train: Iterable[Mapping], raw_eval: Iterable[Mapping],
              random_init_features_fn: Optional[Callable], *, num_classes: int,
              eval_cfg: ml_collections.ConfigDict, train_batches: Optional[Iterable] = None,
              eval_batches: Optional[Iterable] = None, raw_key: str = 'image',
              image_key: str = 'view_0') -> dict:
  """The floors a learned representation must beat, by the same kNN as `evaluate`.

  - pixels: `knn.pixel_features` of the raw images (`raw_key`; uint8 or [0, 1] floats: the
    features do not depend on the scale): flatten, remove the per-image mean, L2-normalize;
  - random init (if `random_init_features_fn` is given): the engine's features_fn on freshly
    initialized parameters (BatchNorm in inference mode with its initial running statistics),
    run on `train_batches` / `eval_batches` (the eval-recipe batches, as `evaluate` uses: the
    features are then extracted exactly as trained ones) or, if those are None, on the raw
    batches scaled to [0, 1] (the same thing when the eval recipe is the identity, CIFAR).

  Returns `knn_top1_pixels`, `knn_top1_random_init` (first k) and their `_k{k}` variants.
  """
  max_train = eval_cfg.max_train_examples or None
  fns = {'pixels': knn_lib.pixel_features}
  if random_init_features_fn is not None and train_batches is None:
    fns['random_init'] = random_init_features_fn
  feats, labels = {}, {}
  for split, batches, cap in (('train', raw_train, max_train), ('eval', raw_eval, None)):
    feats[split], labels[split] = features_lib.extract_many(
        fns, _unit_batches(batches, raw_key), image_key=raw_key, max_examples=cap)
  if random_init_features_fn is not None and train_batches is not None:
    for split, batches, cap in (('train', train_batches, max_train), ('eval', eval_batches, None)):
      feats[split]['random_init'], labels_random = features_lib.extract_features(
          random_init_features_fn, batches, image_key=image_key, max_examples=cap)
      if not np.array_equal(labels_random, labels[split]):
        raise ValueError(f'baselines: the raw and the eval-recipe {split} batches hold different '
                         'examples (labels differ)')
  out = {}
  for name in feats['train']:
    res = _knn(feats['train'][name], labels['train'], feats['eval'][name], labels['eval'],
               num_classes, eval_cfg)
    out.update({k.replace('knn_top1', f'knn_top1_{name}'): v for k, v in res.items()})
  return out


def _unit_batches(batches: Iterable[Mapping], key: str):
  """The batches with integer (uint8) images under `key` scaled to float32 in [0, 1]."""
  for batch in batches:
    images = batch[key]
    if np.issubdtype(images.dtype, np.integer):
      batch = dict(batch, **{key: images.astype(np.float32) / 255.0})
    yield batch
