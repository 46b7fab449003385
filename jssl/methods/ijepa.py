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
- the context encoder (`params['encoder']`) runs on the whole image with
  `token_mask=context`: exactly the encoder on the context patches alone (static shapes);
- the predictor (`params['predictor']`, models.IJEPAPredictor) maps the context encodings and,
  per target block, mask tokens at the block's positions to predictions of the target tokens;
- loss: the mean over the target blocks j of `losses.ijepa_loss(pred_j, targets, block_j)`,
  the squared error to the layer-normed target tokens, averaged over the block's patches of the
  batch.

Masks against I-JEPA's collator: block sizes are drawn per image (the collator draws one per
batch so its index lists share a length, then cuts every list to the batch's shortest; with
boolean masks and the encoder's `token_mask` nothing is cut); when 20 context draws keep fewer
than `min_context` patches, the context is the whole image minus the targets (the collator
instead lets the context overlap target blocks, which shows the predictor some of its targets).

The ViT has no CLS token (as I-JEPA's); `config.model.pool` must be 'mean'.

- params: `{'encoder': ViT, 'predictor': IJEPAPredictor}`; batch_stats `{}`;
  method_state: `{'target_params'}`, a copy of the encoder at init.
- after each optimizer step, `target = tau_k * target + (1 - tau_k) * encoder` with I-JEPA's
  linear momentum schedule `tau_k = tau_base + (tau_end - tau_base) * k / K` (0.996 -> 1), k the
  0-based step just taken, K the run's total steps (I-JEPA's released configs set ipe_scale 1:
  the momentum, like the lr and weight-decay schedules, reaches its end with the run).
- metrics: loss, tau, `target_std` (collapse.embedding_std of the layer-normed target tokens
  over every patch of the batch: 0 when every token is the same) and `context_fraction` (the
  mean share of patches in the context).
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

  def _grid_of(self, x):
    return (x.shape[1] // self.encoder.patch_size, x.shape[2] // self.encoder.patch_size)

  def target_tokens(self, target_params, x):
    """The target encoder's patch tokens `[N, L, D]` of normalized images, gradient stopped."""
    out = self.encoder.apply({'params': target_params}, x, False)
    return jax.lax.stop_gradient(out['patch_tokens'])

  def predict(self, params, x, context, targets, rng=None, train: bool = True):
    """`[N, T, L, D]` predictions of the target tokens (read at each block's positions)."""
    rngs = {'dropout': rng} if rng is not None else {}
    ctx = self.encoder.apply({'params': params['encoder']}, x, train, token_mask=context,
                             rngs=rngs)['patch_tokens']
    return self.predictor.apply({'params': params['predictor']}, ctx, context, targets,
                                self._grid_of(x), train)

  def block_losses(self, predictions, target_tokens, targets):
    """`[T]`: `losses.ijepa_loss` of each target block."""
    return jnp.stack([losses.ijepa_loss(predictions[:, j], target_tokens, targets[:, j])
                      for j in range(targets.shape[1])])

  def init(self, rng, batch):
    x = self.normalize(batch['view_0'][:2])
    enc_rng, pred_rng, mask_rng = jax.random.split(rng, 3)
    enc = self.encoder.init(enc_rng, x, True)['params']
    context, targets = self.draw_masks(mask_rng, x.shape[0], self._grid_of(x))
    tokens = jnp.zeros((x.shape[0], context.shape[1], self.encoder.width), jnp.float32)
    pred = self.predictor.init(pred_rng, tokens, context, targets, self._grid_of(x),
                               True)['params']
    return ({'encoder': enc, 'predictor': pred}, {},
            {'target_params': jax.tree.map(jnp.array, enc)})

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    x = self.normalize(batch['view_0'])
    mask_rng, drop_rng = jax.random.split(rng)
    context, targets = self.draw_masks(mask_rng, x.shape[0], self._grid_of(x))
    target_tokens = self.target_tokens(method_state['target_params'], x)
    predictions = self.predict(params, x, context, targets, drop_rng)
    loss = jnp.mean(self.block_losses(predictions, target_tokens, targets))
    normed = layer_norm(target_tokens)
    metrics = {
        'loss': loss,
        'tau': linear_momentum(step, self.total_steps, self.tau_base, self.tau_end),
        'target_std': collapse.embedding_std(jnp.reshape(normed, (-1, normed.shape[-1]))),
        'context_fraction': jnp.mean(jnp.asarray(context, jnp.float32)),
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
  context_scale, context_aspect, min_context, predictor_width / depth / num_heads, tau_base,
  tau_end."""
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
               image_size=size, tau_base=float(m.tau_base), tau_end=float(m.tau_end),
               mean=tuple(model.mean), std=tuple(model.std), **mask_kwargs)
