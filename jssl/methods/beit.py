"""BEiT: BERT pre-training of image transformers (Bao et al., 2022), the masked-token stage.

One view (`view_0`) plus the data recipe's `mask` (int32 `[g, g]` per example, 1 = masked: the
'beit' recipe's block-wise mask, about 40% of the patches). A frozen dVAE tokenizer (trained
before with configs/dvae.py) turns the view into one visual token per patch; the ViT
(`use_mask_token=True`) replaces the masked patch embeddings by a learned mask token, runs all
tokens, and a linear head predicts the vocabulary logits of every patch;
`losses.beit_loss(logits, tokens, mask)` is the cross-entropy averaged over the masked patches
only. The tokenizer's grid must be the ViT's patch grid: its down-sampling (2**num_down) must
equal `config.model.patch_size`.

The builder receives the trained tokenizer, `(DVAETokenizer, params)`; the engine reads it from
the dVAE run named by `config.method.tokenizer_workdir` (jssl.train.runs.build_method: its
config.json and newest checkpoint). Without it the build fails, naming the key and the path.
Its weights sit in
`method_state['tokenizer']`, never in params: the optimizer never sees them, and the gradient
never reaches them (stop_gradient on the tokens).

- params: `{'encoder': ViT, 'head': Dense(V)}`; batch_stats `{}`;
  method_state: `{'tokenizer': the dVAE's params}` (saved with every checkpoint).
- features: the encoder on the whole image (no mask), inference mode, `pooled`.
- metrics: `loss`, `masked_acc` (top-1 token accuracy on masked patches), `mask_ratio`.
- `recon_images`: original / masked / the tokenizer's reconstruction from the true tokens / from
  BEiT's predictions on the masked patches (true tokens elsewhere). Pictures only: the mask
  there is a uniformly random 40% of the patches, not the block-wise one.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import losses, models
from jssl.methods import base, masking
from jssl.models.vit import dense_init

TOKENIZER_KEY = 'config.method.tokenizer_workdir'


@dataclasses.dataclass(frozen=True)
class BEiT(base.Method):
  """BEiT with a ViT `encoder` (mask token) and a frozen `tokenizer` (a DVAETokenizer)."""
  encoder: nn.Module
  tokenizer: Any
  tokenizer_params: Any = dataclasses.field(default=None, compare=False, hash=False, repr=False)
  image_size: int = 32
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'beit'
  frozen_method_state = True  # method_state holds the frozen tokenizer: it never changes
  recon_columns = ('original', 'masked', 'tokenizer', 'beit')  # picture columns, in order

  def __post_init__(self):
    if not self.encoder.use_mask_token:
      raise ValueError('BEiT: the ViT encoder needs use_mask_token=True')
    if self.image_size % self.encoder.patch_size:
      raise ValueError(f'BEiT: image_size {self.image_size} must be a multiple of patch_size '
                       f'{self.encoder.patch_size}')
    if self.tokenizer.model.downsample != self.encoder.patch_size:
      raise ValueError(
          f'BEiT: the tokenizer makes one token per {self.tokenizer.model.downsample} px '
          f'(2**num_down) but config.model.patch_size is {self.encoder.patch_size}: they must be '
          'equal so that every patch has one visual token')
    if self.tokenizer_params is None:
      raise ValueError(f'BEiT needs the tokenizer weights ({TOKENIZER_KEY})')

  @property
  def patch_size(self) -> int:
    return self.encoder.patch_size

  @property
  def vocab_size(self) -> int:
    return self.tokenizer.vocab_size

  @property
  def head(self) -> nn.Module:
    return nn.Dense(self.vocab_size, kernel_init=dense_init, dtype=self.encoder.dtype)

  def input_spec(self):
    g = self.image_size // self.patch_size
    return {'view_0': ((self.image_size, self.image_size, 3), jnp.float32),
            'mask': ((g, g), jnp.int32)}

  def init(self, rng, batch):
    x = self.normalize(batch['view_0'][:2])
    mask = jnp.reshape(jnp.asarray(batch['mask'][:2]), (2, -1))
    enc_rng, head_rng = jax.random.split(rng)
    enc = self.encoder.init(enc_rng, x, True, mask=mask)['params']
    tokens = jnp.zeros((2, mask.shape[1], self.encoder.width), jnp.float32)  # its shape only
    head = self.head.init(head_rng, tokens)['params']
    tokenizer = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), self.tokenizer_params)
    return {'encoder': enc, 'head': head}, {}, {'tokenizer': tokenizer}

  def visual_tokens(self, method_state, images):
    """The frozen tokenizer's tokens `[N, L]` of images in [0, 1] (no gradient)."""
    tok_params = jax.lax.stop_gradient(method_state['tokenizer'])
    return jax.lax.stop_gradient(self.tokenizer.tokens(tok_params, images))

  def forward(self, params, x, mask, rng=None, train: bool = True):
    """Logits `[N, L, V]` for normalized images `x` and patch masks `mask [N, L]`."""
    rngs = {'dropout': rng} if rng is not None else {}
    out = self.encoder.apply({'params': params['encoder']}, x, train, mask=mask, rngs=rngs)
    return self.head.apply({'params': params['head']}, out['patch_tokens'])

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    del step
    images = batch['view_0']
    n = images.shape[0]
    mask = jnp.reshape(jnp.asarray(batch['mask']), (n, -1))
    tokens = self.visual_tokens(method_state, images)
    logits = self.forward(params, self.normalize(images), mask, rng)
    loss = losses.beit_loss(logits, tokens, mask)
    m = jnp.asarray(mask, jnp.float32)
    hit = (jnp.argmax(logits, axis=-1) == tokens).astype(jnp.float32)
    metrics = {'loss': loss, 'masked_acc': jnp.sum(hit * m) / jnp.maximum(jnp.sum(m), 1.0),
               'mask_ratio': jnp.mean(m)}
    return loss, (batch_stats, method_state, metrics)

  def recon_images(self, params, batch_stats, method_state, images, rng):
    del batch_stats
    images = jnp.asarray(images, jnp.float32)
    n, h, w, _ = images.shape
    g = h // self.patch_size
    _, _, mask = masking.random_masking(rng, n, g * (w // self.patch_size), 0.4)
    tokens = self.visual_tokens(method_state, images)
    logits = self.forward(params, self.normalize(images), mask, train=False)
    pred = jnp.where(mask > 0, jnp.argmax(logits, axis=-1).astype(jnp.int32), tokens)
    tok = method_state['tokenizer']
    pix = masking.upsample_mask(jnp.reshape(mask, (n, g, -1)), self.patch_size)[..., None]
    return {'original': images, 'masked': images * (1 - pix) + 0.5 * pix,
            'tokenizer': self.tokenizer.decode_tokens(tok, tokens, g),
            'beit': self.tokenizer.decode_tokens(tok, pred, g)}

  def features(self, params, batch_stats, images):
    del batch_stats
    return self.encoder.apply({'params': params['encoder']}, self.normalize(images),
                              False)['pooled']


def from_config(config, total_steps: int = 0, tokenizer=None) -> BEiT:
  """The BEiT of a config (`model`: the ViT) and its trained tokenizer, `(DVAETokenizer,
  params)`, which the caller reads from `config.method.tokenizer_workdir`
  (jssl.train.runs.build_method)."""
  del total_steps
  model = config.model
  if tokenizer is None:
    raise ValueError(f'BEiT is built with its trained tokenizer (from {TOKENIZER_KEY}); build it '
                     'through jssl.train.runs.build_method, which reads that run')
  tokenizer, params = tokenizer
  encoder = models.from_config(model, use_mask_token=True)
  augment = config.data.augment
  if int(augment.get('patch_size', encoder.patch_size)) != encoder.patch_size:
    raise ValueError(f'config.data.augment.patch_size={augment.patch_size} must equal '
                     f'config.model.patch_size={encoder.patch_size}')
  image_size = models.image_size(config)
  return BEiT(encoder=encoder, tokenizer=tokenizer, tokenizer_params=params,
              image_size=image_size, mean=tuple(model.mean), std=tuple(model.std))
