"""BEiT's image tokenizer: a discrete VAE (DALL-E's dVAE, Ramesh et al., 2021) in a small form.

`DVAE(vocab_size, hidden, num_down, blocks)` has two halves, each a Flax submodule:
- `encode(x) -> (logits [N, g, g, V], features [N, C])`: normalized images `[N, H, W, 3]` ->
  a 3x3 conv to `hidden` channels, then `num_down` stages of `blocks` residual blocks and a
  stride-2 3x3 conv (the width doubles per stage up to 8 x hidden), `blocks` more residual
  blocks, ReLU and a 1x1 conv to `V` logits per cell of the `g = H / 2**num_down` grid. The
  features are the last hidden map, mean-pooled (what kNN / linear probes read).
- `decode(z) -> images [N, H, W, 3]`: `z [N, g, g, V]` (a one-hot token grid or its Gumbel-softmax
  relaxation) times a learned codebook `[V, C]` (a 1x1 conv without bias), residual blocks, then
  per stage a nearest-neighbour 2x upsampling, a 3x3 conv and residual blocks, and a final
  3x3 conv to 3 channels, in the input's normalized scale.
Residual block: `x + r * (conv1x1(relu(conv3x3(relu(x)))))` with `r = 1 / (2 * blocks)` per
stage (DALL-E scales its residual paths down in the same spirit). No normalization layers: the
tokenizer has no batch statistics and runs the same on any number of devices.

`init_params(model, rng, x)` draws the params as the initializers say in one random op (cheaper to
compile than one threefry per layer). `gumbel_softmax(rng, logits, tau, hard)` is the relaxation (Jang et al., 2017; Maddison et al.,
2017): `softmax((logits + g) / tau)` with `g = -log(-log(u))`; `hard` makes it straight-through
(one-hot forward, the soft gradient). `tokens = argmax(logits)` is the deterministic tokenization
BEiT reads, row-major over the grid like `losses.patchify` and the ViT's patch order.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

conv_init = nn.initializers.variance_scaling(1.0, 'fan_in', 'uniform')


def _conv(module):
  """nn.Conv with the module's dtype, He-uniform init and convolution function."""
  return functools.partial(nn.Conv, kernel_init=conv_init, dtype=module.dtype,
                           conv_general_dilated=module.conv_general_dilated)


def stage_widths(hidden: int, num_down: int) -> Sequence[int]:
  """Channel widths of the `num_down + 1` resolutions: hidden * (1, 2, 4, 8, 8, ...)."""
  return tuple(hidden * 2 ** min(s, 3) for s in range(num_down + 1))


class ResBlock(nn.Module):
  """`x + scale * conv1x1(relu(conv3x3(relu(x))))`, width unchanged."""
  scale: float = 1.0
  dtype: Any = jnp.float32
  conv_general_dilated: Any = None  # None: lax's; see jssl.models.conv

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    conv = _conv(self)
    y = conv(c, (3, 3), name='conv1')(nn.relu(x))
    y = conv(c, (1, 1), name='conv2')(nn.relu(y))
    return x + self.scale * y


class DVAEEncoder(nn.Module):
  vocab_size: int
  hidden: int = 64
  num_down: int = 2
  blocks: int = 1
  dtype: Any = jnp.float32
  conv_general_dilated: Any = None

  @nn.compact
  def __call__(self, x):
    widths = stage_widths(self.hidden, self.num_down)
    scale = 1.0 / (2 * max(self.blocks, 1))
    conv = _conv(self)
    x = conv(widths[0], (3, 3), name='conv_in')(jnp.asarray(x, self.dtype))
    for s in range(self.num_down):
      for b in range(self.blocks):
        x = ResBlock(scale, self.dtype, self.conv_general_dilated, name=f'stage{s}_block{b}')(x)
      x = conv(widths[s + 1], (3, 3), strides=2, name=f'down{s}')(nn.relu(x))
    for b in range(self.blocks):
      x = ResBlock(scale, self.dtype, self.conv_general_dilated,
                   name=f'stage{self.num_down}_block{b}')(x)
    h = nn.relu(x)
    logits = conv(self.vocab_size, (1, 1), name='logits')(h)
    return jnp.asarray(logits, jnp.float32), jnp.mean(jnp.asarray(h, jnp.float32), axis=(1, 2))


class DVAEDecoder(nn.Module):
  hidden: int = 64
  num_down: int = 2
  blocks: int = 1
  dtype: Any = jnp.float32
  conv_general_dilated: Any = None

  @nn.compact
  def __call__(self, z):
    widths = stage_widths(self.hidden, self.num_down)
    scale = 1.0 / (2 * max(self.blocks, 1))
    conv = _conv(self)
    x = conv(widths[-1], (1, 1), use_bias=False, name='codebook')(jnp.asarray(z, self.dtype))
    for b in range(self.blocks):
      x = ResBlock(scale, self.dtype, self.conv_general_dilated,
                   name=f'stage{self.num_down}_block{b}')(x)
    for s in reversed(range(self.num_down)):
      n, h, w, c = x.shape
      x = jax.image.resize(x, (n, 2 * h, 2 * w, c), 'nearest')
      x = conv(widths[s], (3, 3), name=f'up{s}')(nn.relu(x))
      for b in range(self.blocks):
        x = ResBlock(scale, self.dtype, self.conv_general_dilated, name=f'stage{s}_block{b}')(x)
    out = conv(3, (3, 3), name='conv_out')(nn.relu(x))
    return jnp.asarray(out, jnp.float32)


class DVAE(nn.Module):
  """Tokenizer: params `{'encoder', 'decoder'}`; `__call__(x)` (init): decode(softmax(logits))."""
  vocab_size: int = 8192
  hidden: int = 64
  num_down: int = 2
  blocks: int = 1
  dtype: Any = jnp.float32
  conv_general_dilated: Any = None  # None: lax's; see jssl.models.conv

  @property
  def downsample(self) -> int:
    """Pixels per token-grid cell along each side (the ViT patch size BEiT must use)."""
    return 2 ** self.num_down

  def setup(self):
    self.encoder = DVAEEncoder(self.vocab_size, self.hidden, self.num_down, self.blocks,
                               self.dtype, self.conv_general_dilated)
    self.decoder = DVAEDecoder(self.hidden, self.num_down, self.blocks, self.dtype,
                               self.conv_general_dilated)

  def encode(self, x):
    h, w = x.shape[1:3]
    if h % self.downsample or w % self.downsample:
      raise ValueError(f'DVAE: image size {h}x{w} must be a multiple of 2**num_down = '
                       f'{self.downsample}')
    return self.encoder(x)

  def decode(self, z):
    return self.decoder(z)

  def __call__(self, x):
    logits, _ = self.encode(x)
    return self.decode(jax.nn.softmax(logits, axis=-1))


def init_params(model: DVAE, rng: jax.Array, x: jax.Array):
  """The DVAE's params for inputs like `x`, as its initializers define them (kernels He-uniform
  over their fan-in, biases zero), drawn with one `uniform` call for the whole tree: XLA:CPU
  spends seconds compiling each initializer's own threefry, this costs one."""
  shapes = jax.eval_shape(model.init, rng, x)['params']
  leaves, _ = jax.tree_util.tree_flatten_with_path(shapes)
  kernels = [(p, s) for p, s in leaves if getattr(p[-1], 'key', None) == 'kernel']
  total = sum(int(np.prod(s.shape)) for _, s in kernels)
  u = jax.random.uniform(rng, (total,), jnp.float32, -1.0, 1.0)
  out, offset = [], 0
  for path, s in leaves:
    if getattr(path[-1], 'key', None) != 'kernel':
      out.append(jnp.zeros(s.shape, s.dtype))
      continue
    size = int(np.prod(s.shape))
    fan_in = int(np.prod(s.shape[:-1]))
    out.append(jnp.reshape(u[offset:offset + size], s.shape) * np.sqrt(3.0 / fan_in))
    offset += size
  return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shapes), out)


def gumbel_softmax(rng: jax.Array, logits: jax.Array, tau, hard: bool = False) -> jax.Array:
  """Relaxed one-hot samples over the last axis of `logits` at temperature `tau` (float32)."""
  logits = jnp.asarray(logits, jnp.float32)
  u = jax.random.uniform(rng, logits.shape, jnp.float32, minval=1e-10, maxval=1.0)
  y = jax.nn.softmax((logits - jnp.log(-jnp.log(u))) / tau, axis=-1)
  if hard:
    one_hot = jax.nn.one_hot(jnp.argmax(y, axis=-1), logits.shape[-1], dtype=y.dtype)
    y = y + jax.lax.stop_gradient(one_hot - y)
  return y


def tokens_of(logits: jax.Array) -> jax.Array:
  """`[N, g, g, V]` logits -> int32 `[N, g * g]` visual tokens (argmax), row-major."""
  n = logits.shape[0]
  return jnp.reshape(jnp.argmax(logits, axis=-1).astype(jnp.int32), (n, -1))
