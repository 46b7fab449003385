"""Optimizers and learning-rate schedules from optax, built from a `config.optim` block.

`build(optim_cfg, batch_size, total_steps, warmup_steps) -> (tx, schedule)`:
- `name`: 'lars' (optax.lars, momentum 0.9), 'sgd' (momentum, `nesterov` option, decoupled
  weight decay added to the gradient), 'adamw', 'lamb';
- peak learning rate `scaled_lr`: `lr * batch_size / 256` ('linear'), `lr * sqrt(batch_size)`
  ('sqrt', SimCLR's 0.075 * sqrt(bs)), or `lr` ('none');
- `schedule`: 'cosine' (linear warm-up from 0, cosine decay to `end_lr_factor * peak`) or
  'constant' (warm-up, then constant);
- weight decay and the LARS trust ratio apply to weights only: `decay_mask` excludes biases and
  normalization (BatchNorm / LayerNorm) parameters;
- `trust_clip` (LARS only; solo-learn's `clip_lr`): the trust-ratio-scaled step of a weight is
  capped at the plain SGD step, `lr_t * min(eta ||w|| / (lr_t ||u||), 1) * u` with
  `u = g + wd * w` and `eta = trust_coefficient` (solo-learn's CIFAR recipes: eta 0.02);
- `weight_decay_end` (None: constant): DINO's cosine weight-decay schedule from `weight_decay` to
  `weight_decay_end` over the run (`weight_decay_schedule`), passed as optax's weight-decay
  schedule to every optimizer (each evaluates it at its own step count);
- `clip_norm > 0` clips gradients by global norm first;
- `build(..., mask=, scales=)`: another weight-decay mask (a tree or a function of the params),
  and a tree of per-parameter learning-rate factors applied to the whole update last
  (fine-tuning's layer-wise lr decay: scaling AdamW's update, its decay term included, by s is
  AdamW at lr * s).
"""

import math
import re

import jax
import jax.numpy as jnp
import optax

NAMES = ('lars', 'sgd', 'adamw', 'lamb')
SCALINGS = ('linear', 'sqrt', 'none')
SCHEDULES = ('cosine', 'constant')
_NORM_MODULE = re.compile(r'norm|(^|_)(bn|ln|gn)\d*($|_)')


def _is_norm_module(name: str) -> bool:
  return _NORM_MODULE.search(name.lower()) is not None


def decay_mask(params):
  """True for leaves that get weight decay / LARS adaptation: not a bias, not a norm param.

  A leaf is excluded when its name is 'bias' or when it belongs to a module whose name marks a
  normalization layer ('BatchNorm_0', 'bn1', 'stem_bn', 'proj_bn', 'LayerNorm_0', 'norm'...).
  """
  def keep(path, _):
    names = [getattr(k, 'key', getattr(k, 'name', str(k))) for k in path]
    if names[-1] == 'bias':
      return False
    return not any(_is_norm_module(str(n)) for n in names[:-1])
  return jax.tree_util.tree_map_with_path(keep, params)


def scaled_lr(lr: float, batch_size: int, scaling: str) -> float:
  if scaling == 'linear':
    return lr * batch_size / 256
  if scaling == 'sqrt':
    return lr * math.sqrt(batch_size)
  if scaling == 'none':
    return lr
  raise ValueError(f'config.optim.lr_scaling must be one of {SCALINGS}, got {scaling!r}')


def weight_decay_schedule(start: float, end=None, total_steps: int = 1):
  """A float (constant `start`) or `step -> wd` (DINO's cosine, Caron et al., 2021):
  `wd(k) = end + (start - end) (1 + cos(pi k / K)) / 2` for the 0-based step k of K, held at
  `end` after K. `end` None or equal to `start` gives the constant."""
  if end is None or float(end) == float(start):
    return float(start)
  start, end, total = float(start), float(end), max(int(total_steps), 1)

  def schedule(step):
    k = jnp.minimum(jnp.asarray(step, jnp.float32), total)
    return end + 0.5 * (start - end) * (1.0 + jnp.cos(math.pi * k / total))

  return schedule


def schedule_fn(cfg, peak: float, total_steps: int, warmup_steps: int):
  """Warm-up then cosine (or constant) learning-rate schedule."""
  warmup_steps = min(int(warmup_steps), max(int(total_steps) - 1, 0))
  if cfg.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps, max(int(total_steps), 1),
                                              end_value=peak * cfg.end_lr_factor)
  if cfg.schedule == 'constant':
    return optax.join_schedules([optax.linear_schedule(0.0, peak, max(warmup_steps, 1)),
                                 optax.constant_schedule(peak)], [warmup_steps])
  raise ValueError(f'config.optim.schedule must be one of {SCHEDULES}, got {cfg.schedule!r}')


def scale_by_clipped_trust_ratio(learning_rate, trust_coefficient: float
                                 ) -> optax.GradientTransformation:
  """Scales each update `u` by `min(eta ||w|| / (lr_t ||u||), 1)` (solo-learn's LARS with
  `clip_lr`): the LARS step `eta ||w|| u / ||u||` capped at the SGD step `lr_t u`. `lr_t` is
  `learning_rate` (a schedule) at the step being taken; a zero norm or lr leaves `u` as it is."""
  schedule = learning_rate if callable(learning_rate) else (lambda _: learning_rate)

  def init_fn(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params):
    if params is None:
      raise ValueError('scale_by_clipped_trust_ratio needs the parameters')
    lr_t = jnp.asarray(schedule(state.count), jnp.float32)

    def scale(u, w):
      w_norm = jnp.linalg.norm(w.astype(jnp.float32))
      u_norm = jnp.linalg.norm(u.astype(jnp.float32))
      ok = (w_norm > 0) & (u_norm > 0) & (lr_t > 0)
      ratio = trust_coefficient * w_norm / jnp.where(ok, u_norm * lr_t, 1.0)
      return u * jnp.where(ok, jnp.minimum(ratio, 1.0), 1.0).astype(u.dtype)

    return (jax.tree.map(scale, updates, params),
            optax.ScaleByScheduleState(count=optax.safe_int32_increment(state.count)))

  return optax.GradientTransformation(init_fn, update_fn)


def lars_clipped(learning_rate, weight_decay, trust_coefficient: float, momentum: float,
                 nesterov: bool, mask=decay_mask) -> optax.GradientTransformation:
  """optax.lars with the clipped trust ratio (weights only: biases and norm parameters get
  plain SGD with momentum and no weight decay, as in optax.lars with these masks)."""
  return optax.chain(
      optax.add_decayed_weights(weight_decay, mask=mask),
      optax.masked(scale_by_clipped_trust_ratio(learning_rate, trust_coefficient), mask),
      optax.scale_by_learning_rate(learning_rate),
      optax.trace(decay=momentum, nesterov=nesterov))


def scale_by_tree(scales) -> optax.GradientTransformation:
  """Multiplies each update by its leaf of `scales` (a per-parameter learning-rate factor)."""
  def update(updates, state, params=None):
    del params
    return jax.tree.map(lambda u, s: u * s, updates, scales), state
  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def build(cfg, batch_size: int, total_steps: int, warmup_steps: int, mask=decay_mask,
          scales=None):
  """`(tx, schedule)` for `config.optim` and a run of `total_steps` steps (`mask`, `scales`:
  the module docstring)."""
  peak = scaled_lr(cfg.lr, batch_size, cfg.lr_scaling)
  lr = schedule_fn(cfg, peak, total_steps, warmup_steps)
  wd = weight_decay_schedule(cfg.weight_decay, cfg.get('weight_decay_end', None), total_steps)
  if cfg.name == 'lars' and cfg.get('trust_clip', False):
    tx = lars_clipped(lr, wd, cfg.trust_coefficient, cfg.momentum, cfg.nesterov, mask)
  elif cfg.name == 'lars':
    tx = optax.lars(lr, weight_decay=wd, weight_decay_mask=mask,
                    trust_coefficient=cfg.trust_coefficient, trust_ratio_mask=mask,
                    momentum=cfg.momentum, nesterov=cfg.nesterov)
  elif cfg.name == 'sgd':
    tx = optax.chain(optax.add_decayed_weights(wd, mask),
                     optax.sgd(lr, momentum=cfg.momentum, nesterov=cfg.nesterov))
  elif cfg.name == 'adamw':
    tx = optax.adamw(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd, mask=mask)
  elif cfg.name == 'lamb':
    tx = optax.lamb(lr, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=wd, mask=mask)
  else:
    raise ValueError(f'config.optim.name must be one of {NAMES}, got {cfg.name!r}')
  if scales is not None:
    tx = optax.chain(tx, scale_by_tree(scales))
  if cfg.clip_norm and cfg.clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(cfg.clip_norm), tx)
  return tx, lr
