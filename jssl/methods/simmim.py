"""SimMIM: a simple framework for masked image modeling (Xie et al., 2022).

One view (`view_0`, normalized by the dataset mean / std) plus the data recipe's `mask`
(int32 `[g, g]` per example on the model's patch grid, 1 = masked: SimMIM's random mask of
`mask_patch_size` squares, ratio 0.6, made by jssl.data's 'simmim' recipe). The ViT encoder
(`use_mask_token=True`) replaces the masked patch embeddings by a learned mask token and runs all
tokens; a one-layer head (Dense, patch token -> p*p*3 pixels, SimMIM's 1x1 conv + pixel shuffle)
predicts every patch; `losses.simmim_loss` is the L1 error on masked pixels (the patch mask
upsampled by p) against the normalized input `x`:
`sum(|pred - x| * m) / (sum(m) + 1e-5) / 3`.

- params: `{'encoder': ViT, 'head': Dense}`; batch_stats and method_state: `{}`.
- features: the encoder on the whole image (no mask), inference mode, `pooled`.
- `recon_images(params, batch_stats, method_state, images, rng)`: the engine's picture hook
  (a dict of image batches, see jssl.eval.recon_grid), with a mask of the recipe's kind drawn
  on the device.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import losses, models
from jssl.methods import base, masking
from jssl.models.vit import dense_init


@dataclasses.dataclass(frozen=True)
class SimMIM(base.Method):
  """SimMIM with a ViT `encoder` built with `use_mask_token=True`."""
  encoder: nn.Module
  image_size: int = 32
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'simmim'
  # the picture columns of recon_images, in order
  recon_columns = ('original', 'masked', 'reconstruction', 'recon + visible')
  mask_patch_size: int = 0  # the data recipe's, for the pictures' masks (0: the model patch)
  mask_ratio: float = 0.6

  def __post_init__(self):
    if not self.encoder.use_mask_token:
      raise ValueError('SimMIM: the ViT encoder needs use_mask_token=True')
    if self.image_size % self.encoder.patch_size:
      raise ValueError(f'SimMIM: image_size {self.image_size} must be a multiple of patch_size '
                       f'{self.encoder.patch_size}')

  @property
  def patch_size(self) -> int:
    return self.encoder.patch_size

  @property
  def head(self) -> nn.Module:
    p = self.patch_size
    return nn.Dense(p * p * 3, kernel_init=dense_init, dtype=self.encoder.dtype)

  def input_spec(self):
    g = self.image_size // self.patch_size
    return {'view_0': ((self.image_size, self.image_size, 3), jnp.float32),
            'mask': ((g, g), jnp.int32)}

  def forward(self, params, x, mask, rng=None, train: bool = True):
    """`pred [N, H, W, 3]` for normalized images `x` and patch-grid masks `mask [N, gh, gw]`."""
    n, h, w, _ = x.shape
    rngs = {'dropout': rng} if rng is not None else {}
    out = self.encoder.apply({'params': params['encoder']}, x, train,
                             mask=jnp.reshape(mask, (n, -1)), rngs=rngs)
    pred = self.head.apply({'params': params['head']}, out['patch_tokens'])
    return losses.unpatchify(jnp.asarray(pred, jnp.float32), self.patch_size, h, w)

  def init(self, rng, batch):
    x = self.normalize(batch['view_0'][:2])
    mask = jnp.reshape(jnp.asarray(batch['mask'][:2]), (2, -1))
    enc_rng, head_rng = jax.random.split(rng)
    enc = self.encoder.init(enc_rng, x, True, mask=mask)['params']
    tokens = jnp.zeros((2, mask.shape[1], self.encoder.width), jnp.float32)  # its shape only
    head = self.head.init(head_rng, tokens)['params']
    return {'encoder': enc, 'head': head}, {}, {}

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    del step
    x = self.normalize(batch['view_0'])
    mask = batch['mask']
    pred = self.forward(params, x, mask, rng)
    pix_mask = masking.upsample_mask(mask, self.patch_size)
    loss = losses.simmim_loss(pred, x, pix_mask)
    return loss, (batch_stats, method_state, {'loss': loss})

  def picture_mask(self, rng, n: int, height: int, width: int):
    """A SimMIM mask `[n, gh, gw]` on the patch grid: `ceil(ratio * cells)` of the
    `mask_patch_size` squares, uniformly at random (the data recipe's kind, drawn on the device)."""
    p = self.patch_size
    scale = max(self.mask_patch_size // p, 1)
    rows, cols = height // (p * scale), width // (p * scale)
    count = math.ceil(rows * cols * self.mask_ratio - 1e-6)
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(rng, (n, rows * cols)), axis=1), axis=1)
    cells = jnp.reshape((rank < count).astype(jnp.int32), (n, rows, cols))
    return jnp.repeat(jnp.repeat(cells, scale, axis=1), scale, axis=2)

  def recon_images(self, params, batch_stats, method_state, images, rng):
    """Pictures (jssl.eval.recon_grid): `{'original', 'masked' (grey), 'reconstruction' (the
    head's prediction of every pixel), 'recon + visible'}`."""
    del batch_stats, method_state
    images = jnp.asarray(images, jnp.float32)
    n, h, w, _ = images.shape
    mask = self.picture_mask(rng, n, h, w)
    pred = self.forward(params, self.normalize(images), mask, train=False)
    pred = jnp.clip(pred * jnp.asarray(self.std, jnp.float32) + jnp.asarray(self.mean, jnp.float32),
                    0.0, 1.0)
    m = jnp.asarray(masking.upsample_mask(mask, self.patch_size), jnp.float32)[..., None]
    return {'original': images, 'masked': images * (1 - m) + 0.5 * m, 'reconstruction': pred,
            'recon + visible': images * (1 - m) + pred * m}

  def features(self, params, batch_stats, images):
    del batch_stats
    return self.encoder.apply({'params': params['encoder']}, self.normalize(images),
                              False)['pooled']


def from_config(config, total_steps: int = 0) -> SimMIM:
  """The SimMIM of a config (`model`: the ViT; the mask comes from `data.augment`)."""
  del total_steps
  model = config.model
  encoder = models.from_config(model, use_mask_token=True)
  augment = config.data.augment
  if int(augment.get('model_patch_size', encoder.patch_size)) != encoder.patch_size:
    raise ValueError(f'config.data.augment.model_patch_size={augment.model_patch_size} must '
                     f'equal config.model.patch_size={encoder.patch_size}')
  return SimMIM(encoder=encoder, image_size=models.image_size(config), mean=tuple(model.mean),
                std=tuple(model.std),
                mask_patch_size=int(augment.get('mask_patch_size', encoder.patch_size)),
                mask_ratio=float(augment.get('mask_ratio', 0.6)))
