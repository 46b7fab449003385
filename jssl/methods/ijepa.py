"""I-JEPA: joint-embedding predictive architecture (Assran et al., 2023).

One view (`view_0`: a random resized crop, no flip and no photometric augmentation, the 'mae'
recipe with `flip_p=0` and `scale=(0.3, 1)` in configs/ijepa.py), normalized by the dataset
mean / std. In `loss_fn`, per image, the masks are drawn on the device from the step's rng
(`jssl.data.masks.ijepa_masks`): `num_targets` (4) target blocks of 15-20% of the patch grid
(aspect 0.75-1.5) and one context block of 85-100% (aspect 1) with every target patch removed,
at least `min_context` patches. Then:
- the target encoder (`method_state['target_params']`, an EMA of the context encoder) runs on
  the whole image, every patch, in inference mode; its `patch_tokens` are the targets
  (gradient stopped; layer-normalized inside the loss);
- the masks become fixed-length index lists (`jssl.data.masks.ijepa_indices`): `context_tokens`
  slots for the context (an image with more context patches keeps a uniformly random
  `context_tokens` of them; 0 = every patch of the grid, so nothing is ever cut) and, per target
  block, as many slots as the largest block can have;
- the context encoder (`params['encoder']`) runs on the gathered context patches alone
  (`ids_keep` with a `token_mask` over the padding slots): its cost follows the context's size,
  not the grid's;
- the predictor (`params['predictor']`, models.IJEPAPredictor) maps the context encodings and,
  per target block, mask tokens at the block's positions to predictions of the target tokens;
- loss: the mean over the target blocks j of `losses.ijepa_loss(pred_j, targets_j, valid_j)`,
  the squared error to the layer-normed target tokens gathered at the block's patches, averaged
  over the block's patches of the batch.

Masks against I-JEPA's collator: block sizes are drawn per image (the collator draws one per
batch so its index lists share a length, then cuts every context list to the batch's shortest,
keeping its first patches in raster order; here a context is cut only past `context_tokens`, to
a random subset); when 20 context draws keep fewer than `min_context` patches, the context is
the whole image minus the targets (the collator instead lets the context overlap target blocks,
which shows the predictor some of its targets).

The ViT has no CLS token (as I-JEPA's); `config.model.pool` must be 'mean'.

- params: `{'encoder': ViT, 'predictor': IJEPAPredictor}`; batch_stats `{}`;
  method_state: `{'target_params'}`, a copy of the encoder at init.
- after each optimizer step, `target = tau_k * target + (1 - tau_k) * encoder` with I-JEPA's
  linear momentum schedule `tau_k = tau_base + (tau_end - tau_base) * k / K` (0.996 -> 1), k the
  0-based step just taken, K the run's total steps (I-JEPA's released configs set ipe_scale 1:
  the momentum, like the lr and weight-decay schedules, reaches its end with the run).
- metrics: loss, tau, `target_std` (collapse.embedding_std of the layer-normed target tokens
  over every patch of the batch: 0 when every token is the same), `context_fraction` (the mean
  share of the grid's patches the context encoder sees) and `context_cut` (the mean share of
  drawn context patches left out by the `context_tokens` cut).
- features: the context encoder (the only encoder in `params`, what the interface passes) on
  the whole image, inference mode, the mean of its patch tokens. I-JEPA evaluates the target
  encoder's mean-pooled features; at the end of training the two differ by the EMA's lag.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import losses, models
from jssl.data import masks
from jssl.methods import base, collapse, ema
from jssl.models.ijepa_predictor import IJEPAPredictor


def linear_momentum(step, total_steps: int, base_tau: float, end_tau: float = 1.0) -> jax.Array:
  """`base + (end - base) * min(step / total_steps, 1)` in float32 (I-JEPA's EMA schedule)."""
  k = jnp.minimum(jnp.asarray(step, jnp.float32), total_steps)
  return base_tau + (end_tau - base_tau) * k / max(total_steps, 1)


def layer_norm(x, eps: float = 1e-6):
  """The parameter-free layer norm over the last axis that `losses.ijepa_loss` applies."""
  x = jnp.asarray(x, jnp.float32)
  x = x - jnp.mean(x, axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)


@dataclasses.dataclass(frozen=True)
class IJEPA(base.Method):
  """I-JEPA with a ViT `encoder` (no CLS token, mean pool) and an `IJEPAPredictor`."""
  encoder: nn.Module
  predictor: nn.Module
  total_steps: int = 1000
  image_size: int = 32
  num_targets: int = 4
  target_scale: tuple = (0.15, 0.2)
  target_aspect: tuple = (0.75, 1.5)
  context_scale: tuple = (0.85, 1.0)
  context_aspect: tuple = (1.0, 1.0)
  min_context: int = 10
  context_tokens: int = 0  # context slots per image; 0: every patch of the grid (no cut)
  tau_base: float = 0.996
  tau_end: float = 1.0
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'ijepa'

  def __post_init__(self):
    if self.encoder.class_token or self.encoder.num_registers:
      raise ValueError('I-JEPA: the encoder must have no CLS or register tokens')
    if self.image_size % self.encoder.patch_size:
      raise ValueError(f'I-JEPA: image_size {self.image_size} must be a multiple of patch_size '
                       f'{self.encoder.patch_size}')
    if self.predictor.out_width != self.encoder.width:
      raise ValueError(f'I-JEPA: predictor out_width {self.predictor.out_width} != encoder '
                       f'width {self.encoder.width}')
    masks.ijepa_check(self.grid, **self.mask_kwargs())  # fail at build, not at the first step
    if not 0 <= self.context_tokens <= self.grid[0] * self.grid[1]:
      raise ValueError(f'I-JEPA: context_tokens must be in [0, {self.grid[0] * self.grid[1]}] '
                       f'(0: every patch of the {self.grid[0]}x{self.grid[1]} grid), got '
                       f'{self.context_tokens}')

  @property
  def grid(self) -> tuple:
    g = self.image_size // self.encoder.patch_size
    return (g, g)

  def mask_kwargs(self) -> dict:
    return dict(num_targets=self.num_targets, target_scale=self.target_scale,
                target_aspect=self.target_aspect, context_scale=self.context_scale,
                context_aspect=self.context_aspect, min_context=self.min_context)

  def input_spec(self):
    return {'view_0': ((self.image_size, self.image_size, 3), jnp.float32)}

  def draw_masks(self, rng, batch_size: int, grid=None):
    """`(context [N, L] bool, targets [N, T, L] bool)` (jssl.data.masks.ijepa_masks)."""
    return masks.ijepa_masks(rng, batch_size, grid or self.grid, **self.mask_kwargs())

  def slots(self, grid=None) -> tuple:
    """`(K, M)`: the context slots (`context_tokens`, or the grid's L) and the slots per target
    block (the largest block's area)."""
    grid = grid or self.grid
    num = grid[0] * grid[1]
    return (min(self.context_tokens or num, num),
            masks.ijepa_max_block_area(grid, self.target_scale, self.target_aspect))

  def draw_indices(self, rng, batch_size: int, grid=None):
    """`(context_ids, context_valid, target_ids, target_valid)`: `draw_masks(rng)` gathered
    (jssl.data.masks.ijepa_indices; the cut's draw from a key split off `rng`), and the masks."""
    mask_rng, cut_rng = jax.random.split(rng)
    context, targets = self.draw_masks(mask_rng, batch_size, grid)
    return masks.ijepa_indices(cut_rng, context, targets, *self.slots(grid)), (context, targets)

  def _grid_of(self, x):
    return (x.shape[1] // self.encoder.patch_size, x.shape[2] // self.encoder.patch_size)

  def target_tokens(self, target_params, x):
    """The target encoder's patch tokens `[N, L, D]` of normalized images, gradient stopped."""
    out = self.encoder.apply({'params': target_params}, x, False)
    return jax.lax.stop_gradient(out['patch_tokens'])

  def predict(self, params, x, indices, rng=None, train: bool = True):
    """`[N, T, M, D]` predictions of the target tokens at each block's slots; `indices` is
    `draw_indices`' first output."""
    context_ids, context_valid, target_ids, target_valid = indices
    rngs = {'dropout': rng} if rng is not None else {}
    ctx = self.encoder.apply({'params': params['encoder']}, x, train, ids_keep=context_ids,
                             token_mask=context_valid, rngs=rngs)['patch_tokens']
    return self.predictor.apply({'params': params['predictor']}, ctx, context_ids,
                                context_valid, target_ids, target_valid, self._grid_of(x), train)

  def block_losses(self, predictions, target_tokens, indices):
    """`[T]`: `losses.ijepa_loss` of each target block, its target tokens gathered."""
    _, _, target_ids, target_valid = indices
    return jnp.stack([
        losses.ijepa_loss(predictions[:, j],
                          jnp.take_along_axis(target_tokens, target_ids[:, j, :, None], axis=1),
                          target_valid[:, j])
        for j in range(target_ids.shape[1])])

  def init(self, rng, batch):
    x = self.normalize(batch['view_0'][:2])
    enc_rng, pred_rng, mask_rng = jax.random.split(rng, 3)
    enc = self.encoder.init(enc_rng, x, True)['params']
    indices, _ = self.draw_indices(mask_rng, x.shape[0], self._grid_of(x))
    tokens = jnp.zeros(indices[0].shape + (self.encoder.width,), jnp.float32)
    pred = self.predictor.init(pred_rng, tokens, *indices, self._grid_of(x), True)['params']
    return ({'encoder': enc, 'predictor': pred}, {},
            {'target_params': jax.tree.map(jnp.array, enc)})

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    x = self.normalize(batch['view_0'])
    mask_rng, drop_rng = jax.random.split(rng)
    indices, (context, _) = self.draw_indices(mask_rng, x.shape[0], self._grid_of(x))
    target_tokens = self.target_tokens(method_state['target_params'], x)
    predictions = self.predict(params, x, indices, drop_rng)
    loss = jnp.mean(self.block_losses(predictions, target_tokens, indices))
    normed = layer_norm(target_tokens)
    seen = jnp.sum(jnp.asarray(indices[1], jnp.float32), axis=1)
    drawn = jnp.sum(jnp.asarray(context, jnp.float32), axis=1)
    metrics = {
        'loss': loss,
        'tau': linear_momentum(step, self.total_steps, self.tau_base, self.tau_end),
        'target_std': collapse.embedding_std(jnp.reshape(normed, (-1, normed.shape[-1]))),
        'context_fraction': jnp.mean(seen) / context.shape[1],
        'context_cut': jnp.mean(1.0 - seen / drawn),
    }
    return loss, (batch_stats, method_state, metrics)

  def update_state(self, old_params, params, method_state, step):
    del old_params
    tau = linear_momentum(step, self.total_steps, self.tau_base, self.tau_end)
    target = ema.ema_update(method_state['target_params'], params['encoder'], tau)
    return params, dict(method_state, target_params=target)

  def features(self, params, batch_stats, images):
    del batch_stats
    return self.encoder.apply({'params': params['encoder']}, self.normalize(images),
                              False)['pooled']


def from_config(config, total_steps: int = 0) -> IJEPA:
  """I-JEPA from `config.model` (a ViT with pool 'mean' and class_token False or absent, built
  without a CLS token) and `config.method`: num_targets, target_scale, target_aspect,
  context_scale, context_aspect, min_context, context_tokens (0 when absent), predictor_width /
  depth / num_heads, tau_base, tau_end."""
  m, model = config.method, config.model
  if model.get('pool', 'cls') != 'mean':
    raise ValueError(f"I-JEPA's ViT has no CLS token: config.model.pool must be 'mean', got "
                     f'{model.get("pool", "cls")!r}')
  if model.get('class_token', False):
    raise ValueError("I-JEPA's ViT has no CLS token: config.model.class_token must be False")
  encoder = models.from_config(model).clone(class_token=False)
  predictor = IJEPAPredictor(width=int(m.predictor_width), depth=int(m.predictor_depth),
                             num_heads=int(m.predictor_num_heads), out_width=encoder.width,
                             mlp_ratio=encoder.mlp_ratio, dtype=encoder.dtype,
                             attention_impl=encoder.attention_impl)
  pair = lambda v: tuple(float(x) for x in v)
  mask_kwargs = dict(num_targets=int(m.num_targets), target_scale=pair(m.target_scale),
                     target_aspect=pair(m.target_aspect), context_scale=pair(m.context_scale),
                     context_aspect=pair(m.context_aspect), min_context=int(m.min_context))
  size = models.image_size(config)
  grid = (size // encoder.patch_size,) * 2
  try:
    masks.ijepa_check(grid, **mask_kwargs)
  except ValueError as e:  # name the keys that set the grid and the blocks
    raise ValueError(f'{e} (the {grid[0]}x{grid[1]} grid is the view size {size} over '
                     'config.model.patch_size; the blocks are config.method.num_targets, '
                     'target_scale, target_aspect, context_scale, context_aspect, min_context)'
                     ) from e
  return IJEPA(encoder=encoder, predictor=predictor, total_steps=int(total_steps),
               image_size=size, context_tokens=int(m.get('context_tokens', 0)),
               tau_base=float(m.tau_base), tau_end=float(m.tau_end),
               mean=tuple(model.mean), std=tuple(model.std), **mask_kwargs)
