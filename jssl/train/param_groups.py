"""Parameter groups with their own learning rate: SimSiam's fixed predictor lr, Barlow Twins'
bias / BatchNorm lr.

A method may define `optim_groups() -> tuple of dicts`, each
`{'name': str, 'select': str, 'lr_mult': float, 'schedule': 'same' | 'constant'}`:
- `select`: a top-level params subtree ('predictor') or 'bias_and_norm' (the leaves
  optim.decay_mask leaves out: biases and normalization parameters); the first group that
  selects a leaf owns it, the other leaves form the group 'default' (config.optim as it is);
- the group's peak lr is `lr_mult` times config.optim's; 'same' keeps the run's warm-up and
  schedule, 'constant' holds the peak from step 0 (no warm-up, no decay).
Every group gets the optimizer of config.optim (its own LARS trust ratios, momentum, masked
weight decay, per leaf as before): with `optax.multi_transform` the result equals one optimizer
with per-group learning rates. Gradient clipping (clip_norm), if any, stays global.

`build(optim_cfg, batch_size, total_steps, warmup_steps, groups)` -> `(tx, schedule)` as
optim.build (the schedule is the default group's, for logging). The engine wires it in with
`groups=getattr(method, 'optim_groups', tuple)()` in place of `optim.build(...)`.
"""

import jax
import optax

from jssl.train import optim

SCHEDULES = ('same', 'constant')


def labels(params, groups):
  """The group name of every leaf of params ('default' where no group selects it)."""
  decayed = optim.decay_mask(params)

  def label(path, leaf_decayed):
    top = getattr(path[0], 'key', getattr(path[0], 'name', str(path[0])))
    for g in groups:
      if g['select'] == top or (g['select'] == 'bias_and_norm' and not leaf_decayed):
        return g['name']
    return 'default'

  return jax.tree_util.tree_map_with_path(label, decayed)


def build(optim_cfg, batch_size: int, total_steps: int, warmup_steps: int, groups=()):
  """`(tx, schedule)`: optim.build with per-group learning rates (see the module docstring)."""
  groups = tuple(groups or ())
  if not groups:
    return optim.build(optim_cfg, batch_size, total_steps, warmup_steps)
  names = [g['name'] for g in groups]
  if len(set(names)) != len(names) or 'default' in names:
    raise ValueError(f'optimizer group names must be unique and not "default": {names}')
  clip = optim_cfg.get('clip_norm', 0.0)
  base_cfg = optim_cfg.copy_and_resolve_references()
  base_cfg.clip_norm = 0.0
  txs = {}
  txs['default'], schedule = optim.build(base_cfg, batch_size, total_steps, warmup_steps)
  for g in groups:
    if g['schedule'] not in SCHEDULES:
      raise ValueError(f'optimizer group {g["name"]!r}: schedule must be one of {SCHEDULES}, '
                       f'got {g["schedule"]!r}')
    cfg = base_cfg.copy_and_resolve_references()
    cfg.lr = base_cfg.lr * g['lr_mult']
    warmup = warmup_steps
    if g['schedule'] == 'constant':
      cfg.schedule, warmup = 'constant', 0
    txs[g['name']] = optim.build(cfg, batch_size, total_steps, warmup)[0]
  tx = optax.multi_transform(txs, lambda params: labels(params, groups))
  if clip and clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx, schedule
