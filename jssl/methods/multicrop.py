"""Multi-crop helpers shared by DINO and SwAV (Caron et al., 2020; 2021).

A multi-crop batch holds `view_0..view_{V-1}`: the first `n_global` crops at `global_size`, the
other `n_local` at `local_size` (jssl.data's 'multicrop' recipe). `backbone_groups` runs the
backbone once per resolution group (the crops of one size concatenated into one batch, as
DINO's MultiCropWrapper does), so BatchNorm statistics are per group and span the global batch;
the heads then see all crops at once. Also: the builders' epoch -> step conversions.
"""

import dataclasses

import jax
import jax.numpy as jnp

from jssl import models

_NO_BN = {}


@dataclasses.dataclass(frozen=True)
class Crops:
  """The crop layout: `n_global` crops at `global_size` px, then `n_local` at `local_size`."""
  n_global: int = 2
  global_size: int = 32
  n_local: int = 0
  local_size: int = 16

  @property
  def n_crops(self) -> int:
    return self.n_global + self.n_local

  def input_spec(self) -> dict:
    spec = {}
    for i in range(self.n_crops):
      s = self.global_size if i < self.n_global else self.local_size
      spec[f'view_{i}'] = ((s, s, 3), jnp.float32)
    return spec

  def groups(self, batch) -> list:
    """`[[global crops], [local crops]]` (the second only when n_local > 0)."""
    views = [batch[f'view_{i}'] for i in range(self.n_crops)]
    out = [views[:self.n_global]]
    if self.n_local:
      out.append(views[self.n_global:])
    return out


def crops_from_config(config) -> Crops:
  """The layout of `config.data.augment` (the 'multicrop' recipe's n_global, global_size,
  n_local, local_size); any other recipe: 2 global crops of its image_size."""
  data = config.get('data', None)
  aug = data.get('augment', None) if data is not None else None
  if aug is not None and 'n_global' in aug:
    return Crops(int(aug.n_global), int(aug.global_size), int(aug.n_local), int(aug.local_size))
  size = models.image_size(config)
  return Crops(2, size, 0, size)


def steps_per_epoch(config, total_steps: int) -> float:
  """`config.steps_per_epoch` (set by `methods.build` from the engine's plan), or else
  total_steps / total_epochs."""
  if config.get('steps_per_epoch', 0):
    return float(config.steps_per_epoch)
  epochs = float(config.get('total_epochs', 0) or 0)
  return max(total_steps / epochs, 1.0) if epochs > 0 else 1.0


def epochs_to_steps(epochs: float, spe: float) -> int:
  return int(round(float(epochs) * spe))


def pooled(out) -> jax.Array:
  """ResNets return `[N, F]`; the ViT a dict whose 'pooled' entry is the CLS token."""
  return out['pooled'] if isinstance(out, dict) else out


def apply_backbone(backbone, params, batch_stats, x, *, train=True, rng=None):
  """`(features [N, F], new batch_stats)`; `rng` drives the ViT's stochastic depth."""
  variables = {'params': params, 'batch_stats': batch_stats or _NO_BN}
  if not train:
    return pooled(backbone.apply(variables, x, train=False)), batch_stats
  rngs = {'dropout': rng} if rng is not None else None
  out, updates = backbone.apply(variables, x, train=True, mutable=['batch_stats'], rngs=rngs)
  return pooled(out), updates.get('batch_stats', batch_stats)


def backbone_groups(method, backbone, params, batch_stats, groups, rng=None):
  """Features of every crop, `[sum of group sizes, F]` in view order, and the new BN stats:
  each group (a list of `[N, H, W, 3]` crops of one size) runs as one concatenated batch,
  normalized by its own batch statistics.

  BN's running averages (used only at evaluation) follow the global crops (group 0), the
  resolution features are evaluated at; with `method.running_stats_all_crops` every group's
  update chains into them, as successive forward passes do in the DINO / SwAV PyTorch code
  (there the averages end up about half local-crop statistics). Training is the same either way.
  """
  chain = bool(getattr(method, 'running_stats_all_crops', False))
  feats, new_stats = [], batch_stats
  for i, group in enumerate(groups):
    x = method.normalize(jnp.concatenate(group, axis=0))
    r = None if rng is None else jax.random.fold_in(rng, i)
    h, stats = apply_backbone(backbone, params, new_stats if chain else batch_stats, x, rng=r)
    if i == 0 or chain:
      new_stats = stats
    feats.append(h)
  return jnp.concatenate(feats, axis=0), new_stats


def init_backbone(backbone, rng, x):
  """`(params, batch_stats)` of `backbone` for a sample input (batch_stats {} for a ViT)."""
  variables = backbone.init(rng, x, train=True)
  return variables['params'], variables.get('batch_stats', {})
