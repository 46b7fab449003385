"""Vision Transformer (Dosovitskiy et al., 2021) with the masking that MAE, SimMIM and BEiT need.

`ViT(...)(images, train, *, ids_keep=None, mask=None)` maps `[N, H, W, C]` images (already
normalized; H, W multiples of `patch_size`) to a dict:
- 'tokens': `[N, T, D]` after the final LayerNorm, CLS first (when `class_token`);
- 'patch_tokens': `[N, T - 1, D]` (or all of 'tokens' without a CLS token);
- 'pooled': `[N, D]`: the CLS token ('cls') or the mean of 'patch_tokens' ('mean'); with
  pool 'none', 'tokens' itself.
T is 1 + L for L = (H/p)(W/p) patches, or 1 + L_keep with `ids_keep`.

Layout: patch embedding (a conv with kernel = stride = p, computed as `patchify` (row-major
patches, each flattened (py, px, c)) times the kernel reshaped to `[p*p*C, D]`), plus fixed 2-D
sin-cos position embeddings built for the input's actual patch grid (so any resolution works with
the same params; there is no learned table to interpolate), then `depth` pre-norm blocks
(LayerNorm eps 1e-6 -> MHSA -> residual; LayerNorm -> MLP (ratio 4, exact GELU) -> residual),
then a final LayerNorm. The CLS token's position embedding is zero (MAE).

Register tokens (Darcet et al., 2024; DINOv2 with registers): `num_registers` learned tokens
(normal(0.02), no position embedding) follow the CLS token through the blocks and are dropped at
the output: 'tokens' keeps them (CLS, registers, patches), 'patch_tokens' and the 'mean' pool
do not; 'register_tokens' holds them (`[N, R, D]`).

Masking (keyword arguments):
- `ids_keep: [N, L_keep] int` (MAE): only the kept patch tokens, gathered after position
  embedding, go through the blocks (CLS prepended).
- `mask: [N, L]` bool or float, 1 = masked (SimMIM, BEiT; needs `use_mask_token=True`): patch
  embeddings become `e * (1 - m) + mask_token * m` before position embedding; all tokens go on.
- `token_mask: [N, L]` bool, True = the patch takes part: every token attends only to the CLS /
  register tokens and the patches with True; the others still get outputs (ignore them). Static
  shapes with a per-example number of visible patches, exactly the encoder on the visible
  patches alone. With `ids_keep` it is `[N, L_keep]` and marks which gathered patches take part
  (I-JEPA's context: a fixed number of gathered slots, the unused ones padding).

Init (MAE / BEiT): Dense kernels xavier_uniform (qkv as one fused `[D, 3D]` matrix), biases zero;
the patch kernel xavier_uniform on its `[p*p*C, D]` view; CLS and mask tokens normal(0.02);
LayerNorm ones / zeros; LayerScale (optional) `layerscale_init * ones`.

Stochastic depth: block i drops its residual branches per example with rate
`drop_path_rate * i / (depth - 1)`, only when `train=True` and a 'dropout' rng is given.
Params are float32; `dtype` sets the compute dtype, which is also the outputs' dtype (bf16
activations; softmax and LayerNorm statistics stay float32). `attention_impl='cudnn'` asks
`jax.nn.dot_product_attention` for cuDNN flash attention on NVIDIA GPUs (default: XLA).
`remat=True` recomputes each block in the backward pass (`jssl.models.remat`): the same values,
gradients and stochastic-depth draws, less activation memory.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl.models import remat as remat_lib
from jssl.models.pos_embed import sincos_2d

VIT_CONFIGS = {
    'vit_tiny': dict(width=192, depth=12, num_heads=3),
    'vit_small': dict(width=384, depth=12, num_heads=6),
    'vit_base': dict(width=768, depth=12, num_heads=12),
    'vit_large': dict(width=1024, depth=24, num_heads=16),
}
POOLS = ('cls', 'mean', 'none')

dense_init = nn.initializers.xavier_uniform()
# xavier_uniform of the kernel seen as a [p*p*C, D] Dense (fan_in p*p*C, fan_out D), as MAE does.
patch_init = nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform', in_axis=(0, 1, 2),
                                              out_axis=-1)
token_init = nn.initializers.normal(0.02)


class PatchEmbed(nn.Module):
  """`[N, H, W, C] -> [N, (H/p)(W/p), D]`: a p x p, stride p conv (kernel `[p, p, C, D]`, HWIO)."""
  features: int
  patch_size: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    n, h, w, c = x.shape
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(f'ViT: image size {h}x{w} must be a multiple of patch_size={p}')
    kernel = self.param('kernel', patch_init, (p, p, c, self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    x = jnp.reshape(x, (n, h // p, p, w // p, p, c))
    x = jnp.reshape(jnp.transpose(x, (0, 1, 3, 2, 4, 5)), (n, (h // p) * (w // p), p * p * c))
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    return jnp.dot(x, jnp.reshape(kernel, (p * p * c, self.features))) + bias


class Attention(nn.Module):
  """Multi-head self-attention: `[N, T, D] -> [N, T, D]`, fused qkv projection (timm layout)."""
  num_heads: int
  dtype: Any = jnp.float32
  implementation: Optional[str] = None  # jax.nn.dot_product_attention's: None (XLA) or 'cudnn'

  @nn.compact
  def __call__(self, x, key_mask=None):
    """`key_mask: [N, T]` bool (None: all): the tokens every query may attend to."""
    n, t, d = x.shape
    if d % self.num_heads:
      raise ValueError(f'ViT: width {d} must divide by num_heads={self.num_heads}')
    qkv = nn.Dense(3 * d, kernel_init=dense_init, dtype=self.dtype, name='qkv')(x)
    qkv = jnp.reshape(qkv, (n, t, 3, self.num_heads, d // self.num_heads))
    q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]  # [N, T, H, D/H]
    mask = None if key_mask is None else jnp.asarray(key_mask, bool)[:, None, None, :]
    y = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=self.implementation)
    return nn.Dense(d, kernel_init=dense_init, dtype=self.dtype, name='proj')(
        jnp.reshape(y, (n, t, d)))


def gelu(x):
  """The exact GELU, `x * Phi(x) = 0.5 x (1 + erf(x / sqrt(2)))`, through `lax.erf`.

  The same function as `flax.linen.gelu(x, approximate=False)` (which goes through erfc) to
  float32 round-off (absolute differences under 2e-6 over [-12, 12], gradients under 3e-7), and
  about 3x faster on XLA:CPU, where erf is one polynomial and erfc an exponential and a
  division (benchmarks/vit_ops.py). Not the tanh approximation.
  """
  return 0.5 * x * (1.0 + jax.lax.erf(x * jnp.asarray(0.7071067811865476, x.dtype)))


class Mlp(nn.Module):
  """Dense(hidden) -> exact GELU -> Dense(D)."""
  hidden: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x):
    y = nn.Dense(self.hidden, kernel_init=dense_init, dtype=self.dtype, name='fc1')(x)
    y = gelu(y)
    return nn.Dense(x.shape[-1], kernel_init=dense_init, dtype=self.dtype, name='fc2')(y)


def drop_path(x, rate: float, rng):
  """Zeroes whole examples of `x` with probability `rate`, scaling the rest by 1 / (1 - rate)."""
  keep = jax.random.bernoulli(rng, 1.0 - rate, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


class LayerScale(nn.Module):
  """`x * gamma`, a learned per-channel scale initialized to `init_value` (Touvron et al., 2021)."""
  init_value: float

  @nn.compact
  def __call__(self, x):
    gamma = self.param('scale', nn.initializers.constant(self.init_value), (x.shape[-1],),
                       jnp.float32)
    return x * jnp.asarray(gamma, x.dtype)


class Block(nn.Module):
  """Pre-norm transformer block, with optional LayerScale and stochastic depth."""
  num_heads: int
  mlp_ratio: float = 4.0
  drop_path_rate: float = 0.0
  layerscale_init: Optional[float] = None
  dtype: Any = jnp.float32
  attention_impl: Optional[str] = None

  @nn.compact
  def __call__(self, x, deterministic: bool = True, key_mask=None, dropout_key=None):
    """`dropout_key`: the stochastic-depth key of this block (default: the 'dropout' rng)."""
    d = x.shape[-1]
    norm = lambda name: nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name=name)
    branches = (
        ('1', lambda y: Attention(self.num_heads, self.dtype, self.attention_impl, name='attn')(
            y, key_mask)),
        ('2', lambda y: Mlp(int(d * self.mlp_ratio), self.dtype, name='mlp')(y)),
    )
    dropping = self.drop_path_rate > 0 and not deterministic
    if dropping:
      keys = jax.random.split(self.make_rng('dropout') if dropout_key is None else dropout_key)
    for b, (i, branch) in enumerate(branches):
      y = branch(norm(f'norm{i}')(x))
      if self.layerscale_init is not None:
        y = LayerScale(self.layerscale_init, name=f'ls{i}')(y)
      if dropping:
        y = drop_path(y, self.drop_path_rate, keys[b])
      x = x + y
    return x


class ViT(nn.Module):
  """ViT trunk: patches + sin-cos positions [+ CLS] -> blocks -> LayerNorm -> dict (see module)."""
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  patch_size: int = 16
  mlp_ratio: float = 4.0
  pool: str = 'cls'
  class_token: bool = True
  use_mask_token: bool = False
  drop_path_rate: float = 0.0
  layerscale_init: Optional[float] = None
  num_registers: int = 0
  dtype: Any = jnp.float32
  attention_impl: Optional[str] = None  # 'cudnn': cuDNN flash attention (NVIDIA GPUs, bf16)
  remat: bool = False  # recompute each block in the backward pass (module docstring)

  @nn.compact
  def __call__(self, images, train: bool = True, *, ids_keep=None, mask=None, token_mask=None):
    if self.pool not in POOLS:
      raise ValueError(f'ViT: pool must be one of {POOLS}, got {self.pool!r}')
    if self.pool == 'cls' and not self.class_token:
      raise ValueError("ViT: pool='cls' needs class_token=True")
    if jnp.ndim(images) != 4:
      raise ValueError(f'ViT: images must be [N, H, W, C], got shape {jnp.shape(images)}')
    n, h, w, _ = jnp.shape(images)
    gh, gw = h // self.patch_size, w // self.patch_size
    x = PatchEmbed(self.width, self.patch_size, self.dtype, name='patch_embed')(
        jnp.asarray(images, self.dtype))  # [N, L, D]
    if self.use_mask_token:  # created at init whether or not a mask is passed
      mask_token = self.param('mask_token', token_init, (1, 1, self.width), jnp.float32)
    if mask is not None:
      if not self.use_mask_token:
        raise ValueError('ViT: a mask was given but use_mask_token=False')
      if jnp.shape(mask) != (n, gh * gw):
        raise ValueError(f'ViT: mask must be [N, L] = {(n, gh * gw)}, got {jnp.shape(mask)}')
      m = jnp.asarray(mask, self.dtype)[..., None]
      x = x * (1 - m) + jnp.asarray(mask_token, self.dtype) * m
    x = x + jnp.asarray(sincos_2d(self.width, gh, gw), self.dtype)
    if ids_keep is not None:
      if jnp.ndim(ids_keep) != 2 or jnp.shape(ids_keep)[0] != n:
        raise ValueError(f'ViT: ids_keep must be [N={n}, L_keep], got {jnp.shape(ids_keep)}')
      if not jnp.issubdtype(jnp.result_type(ids_keep), jnp.integer):
        raise TypeError(f'ViT: ids_keep must be integer indices, got {jnp.result_type(ids_keep)}')
      x = jnp.take_along_axis(x, jnp.asarray(ids_keep)[..., None], axis=1)
    prefix = []  # CLS (position embedding zero), then the registers (none)
    if self.class_token:
      prefix.append(self.param('cls', token_init, (1, 1, self.width), jnp.float32))
    if self.num_registers:
      prefix.append(self.param('registers', token_init, (1, self.num_registers, self.width),
                               jnp.float32))
    if prefix:
      x = jnp.concatenate([jnp.broadcast_to(jnp.asarray(p, self.dtype), (n,) + p.shape[1:])
                           for p in prefix] + [x], axis=1)
    skip = int(self.class_token) + self.num_registers
    key_mask = None
    if token_mask is not None:
      want = (n, gh * gw) if ids_keep is None else tuple(jnp.shape(ids_keep))
      if jnp.shape(token_mask) != want:
        raise ValueError(f'ViT: token_mask must be {want} ([N, L], or the shape of ids_keep), '
                         f'got {jnp.shape(token_mask)}')
      key_mask = jnp.concatenate([jnp.ones((n, skip), bool), jnp.asarray(token_mask, bool)], 1)
    deterministic = not train or not self.has_rng('dropout')
    for i in range(self.depth):
      rate = self.drop_path_rate * i / max(self.depth - 1, 1)
      args = (self.num_heads, self.mlp_ratio, rate, self.layerscale_init, self.dtype,
              self.attention_impl)
      key = self.make_rng('dropout') if rate > 0 and not deterministic else None
      x = remat_lib.block_call(self.remat, Block, args, f'block{i}', x, deterministic, key_mask,
                               key)
    tokens = nn.LayerNorm(epsilon=1e-6, dtype=self.dtype, name='norm')(x)
    patch_tokens = tokens[:, skip:]
    pooled = {'cls': lambda: tokens[:, 0], 'mean': lambda: jnp.mean(patch_tokens, axis=1),
              'none': lambda: tokens}[self.pool]()
    out = {'tokens': tokens, 'patch_tokens': patch_tokens, 'pooled': pooled}
    if self.num_registers:
      out['register_tokens'] = tokens[:, int(self.class_token):skip]
    return out


def vit_config(name: str) -> dict:
  """`{'width', 'depth', 'num_heads'}` of 'vit_tiny', 'vit_small', 'vit_base' or 'vit_large'."""
  if name not in VIT_CONFIGS:
    raise ValueError(f'unknown ViT {name!r}; choose one of {sorted(VIT_CONFIGS)}')
  return dict(VIT_CONFIGS[name])


def vit(name: str = 'vit_small', *, patch_size: int = 16, **kwargs) -> ViT:
  """A named ViT; `kwargs` (pool, class_token, use_mask_token, drop_path_rate, layerscale_init,
  dtype, attention_impl, or width / depth / num_heads overrides) go to `ViT`."""
  return ViT(**{**vit_config(name), 'patch_size': patch_size, **kwargs})
