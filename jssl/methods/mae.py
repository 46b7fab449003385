"""MAE: masked autoencoders (He et al., 2022).

One view (`view_0`, normalized by the dataset mean / std). In `loss_fn`, per example, uniform
noise per patch is argsorted on the device (masking.random_masking) and `mask_ratio` (75%) of the
L patches are hidden; the ViT encoder sees only the visible ones (`ids_keep`, with CLS), the
decoder (models.MAEDecoder) appends mask tokens, unshuffles them with `ids_restore` and predicts
every patch's p*p*3 pixels. Loss: `losses.mae_loss(pred, patchify(x), mask, norm_pix_loss)`,
the mean squared error over masked patches of the per-patch normalized target, with
`x` the normalized input image.

- params: `{'encoder': ViT, 'decoder': MAEDecoder}`; batch_stats and method_state: `{}`.
- features: the encoder on the whole (unmasked) image, inference mode, `pooled` (the ViT's
  `pool`: CLS or mean of the patch tokens).
- `reconstruct(params, images, rng) -> (pred images [N, H, W, 3] in [0, 1], mask [N, H, W])`
  for pictures; `recon_images(params, batch_stats, method_state, images, rng)` the engine's
  picture hook (a dict of image batches, see jssl.eval.recon_grid).
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import losses, models
from jssl.methods import base, masking
from jssl.models.mae_decoder import MAEDecoder

@dataclasses.dataclass(frozen=True)
class MAE(base.Method):
  """MAE with a ViT `encoder` and an `MAEDecoder` `decoder` (same patch size)."""
  encoder: nn.Module
  decoder: nn.Module
  image_size: int = 32
  mask_ratio: float = 0.75
  norm_pix_loss: bool = True
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'mae'
  # the picture columns of recon_images, in order
  recon_columns = ('original', 'masked', 'reconstruction', 'recon + visible')

  def __post_init__(self):
    if self.encoder.patch_size != self.decoder.patch_size:
      raise ValueError(f'MAE: encoder patch_size {self.encoder.patch_size} != decoder '
                       f'patch_size {self.decoder.patch_size}')
    if self.image_size % self.encoder.patch_size:
      raise ValueError(f'MAE: image_size {self.image_size} must be a multiple of patch_size '
                       f'{self.encoder.patch_size}')

  @property
  def patch_size(self) -> int:
    return self.encoder.patch_size

  @property
  def grid(self) -> tuple:
    g = self.image_size // self.patch_size
    return (g, g)

  def input_spec(self):
    return {'view_0': ((self.image_size, self.image_size, 3), jnp.float32)}

  def forward(self, params, x, rng, train: bool = True):
    """`(pred [N, L, p*p*3], mask [N, L], encoder tokens)` for normalized images `x`."""
    mask_rng, drop_rng = jax.random.split(rng)
    n, h, w, _ = x.shape
    grid = (h // self.patch_size, w // self.patch_size)
    ids_keep, ids_restore, mask = masking.random_masking(mask_rng, n, grid[0] * grid[1],
                                                         self.mask_ratio)
    out = self.encoder.apply({'params': params['encoder']}, x, train, ids_keep=ids_keep,
                             rngs={'dropout': drop_rng})
    pred = self.decoder.apply({'params': params['decoder']}, out['tokens'], ids_restore, grid,
                              train)
    return pred, mask, out['tokens']

  def init(self, rng, batch):
    x = self.normalize(batch['view_0'][:2])
    enc_rng, dec_rng, mask_rng = jax.random.split(rng, 3)
    ids_keep, ids_restore, _ = masking.random_masking(
        mask_rng, x.shape[0], self.grid[0] * self.grid[1], self.mask_ratio)
    enc = self.encoder.init(enc_rng, x, True, ids_keep=ids_keep)['params']
    tokens = jnp.zeros((x.shape[0], ids_keep.shape[1] + int(self.encoder.class_token),
                        self.encoder.width), jnp.float32)  # only its shape matters
    dec = self.decoder.init(dec_rng, tokens, ids_restore, self.grid, True)['params']
    return {'encoder': enc, 'decoder': dec}, {}, {}

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    del step
    x = self.normalize(batch['view_0'])
    pred, mask, _ = self.forward(params, x, rng)
    loss = losses.mae_loss(pred, losses.patchify(x, self.patch_size), mask,
                           norm_pix_loss=self.norm_pix_loss)
    return loss, (batch_stats, method_state, {'loss': loss})

  def reconstruct(self, params, images, rng):
    """`(pred, mask)`: the decoder's images in [0, 1] (with `norm_pix_loss`, each predicted patch
    is given the true patch's mean and std, as MAE's visualizations do) and the pixel mask
    `[N, H, W]` (1 = masked). Paste: `images * (1 - mask[..., None]) + pred * mask[..., None]`."""
    x = self.normalize(images)
    n, h, w, _ = x.shape
    p = self.patch_size
    pred, mask, _ = self.forward(params, x, rng, train=False)
    pred = jnp.asarray(pred, jnp.float32)
    if self.norm_pix_loss:
      t = losses.patchify(x, p)
      mu = jnp.mean(t, axis=-1, keepdims=True)
      var = jnp.var(t, axis=-1, keepdims=True, ddof=1)
      pred = pred * jnp.sqrt(var + 1e-6) + mu
    pred = losses.unpatchify(pred, p, h, w)
    pred = pred * jnp.asarray(self.std, jnp.float32) + jnp.asarray(self.mean, jnp.float32)
    pix_mask = masking.upsample_mask(jnp.reshape(mask, (n, h // p, w // p)), p)
    return jnp.clip(pred, 0.0, 1.0), pix_mask

  def recon_images(self, params, batch_stats, method_state, images, rng):
    """Pictures (jssl.eval.recon_grid): `{'original', 'masked' (hidden patches grey),
    'reconstruction' (the decoder's every patch), 'recon + visible' (visible patches pasted)}`."""
    del batch_stats, method_state
    images = jnp.asarray(images, jnp.float32)
    pred, mask = self.reconstruct(params, images, rng)
    m = mask[..., None]
    return {'original': images, 'masked': images * (1 - m) + 0.5 * m, 'reconstruction': pred,
            'recon + visible': images * (1 - m) + pred * m}

  def features(self, params, batch_stats, images):
    del batch_stats
    return self.encoder.apply({'params': params['encoder']}, self.normalize(images),
                              False)['pooled']


def from_config(config, total_steps: int = 0) -> MAE:
  """The MAE of a config (`model`: the ViT; `method`: mask_ratio, norm_pix_loss, decoder_*)."""
  del total_steps
  m, model = config.method, config.model
  encoder = models.from_config(model)
  decoder = MAEDecoder(width=m.decoder_width, depth=m.decoder_depth,
                       num_heads=m.decoder_num_heads, patch_size=encoder.patch_size,
                       mlp_ratio=encoder.mlp_ratio, class_token=encoder.class_token,
                       dtype=encoder.dtype, attention_impl=encoder.attention_impl,
                       remat=encoder.remat)  # config.model.remat: every transformer block
  return MAE(encoder=encoder, decoder=decoder, image_size=models.image_size(config),
             mask_ratio=float(m.mask_ratio), norm_pix_loss=bool(m.norm_pix_loss),
             mean=tuple(model.mean), std=tuple(model.std))
