"""The dVAE tokenizer of BEiT, trained as DALL-E's stage one (Ramesh et al., 2021).

One view (`view_0`, normalized by the dataset mean / std). The encoder (models.dvae.DVAE) gives
logits over a vocabulary of V visual tokens per cell of the token grid (g = image_size / 2**num_down
per side: 8 x 8 at 32 px with 2 down-samplings, 14 x 14 at 224 with 4); a Gumbel-softmax sample
at temperature `tau(step)` goes through the decoder back to pixels. The loss is

    loss = mean over values of (decoder(z) - x)^2  +  kl_weight(step) * mean over cells of
           KL(q || uniform) = sum_v q_v log q_v + log V,  q = softmax(logits),

the relaxed ELBO with a uniform prior over the codebook (DALL-E's, with an MSE likelihood in place
of its logit-Laplace). Schedules, both functions of `step`:
- temperature: geometric from `tau_start` (1) to `tau_final` (1/16, DALL-E's) over the first
  `anneal_steps`, then constant;
- KL weight: linear from 0 to `kl_weight` over the first `kl_warmup_steps` (DALL-E warms its beta
  up the same way), then constant.
Metrics: `recon_loss`, `kl`, `temperature`, `kl_weight`, `perplexity` (of the batch's hard-token
histogram: exp of its entropy, V when every token is used equally, 1 at codebook collapse).

- params: `{'encoder', 'decoder'}`; batch_stats and method_state: `{}`.
- features: the encoder's last hidden map, mean-pooled (inference), for the kNN monitor.
- `tokens(params, images)`: int32 `[N, g * g]` visual tokens of images in [0, 1] (argmax).
- `recon_images(params, batch_stats, method_state, images, rng)`: `{'original', 'reconstruction'}`
  (the decoder fed the one-hot argmax tokens: what BEiT's targets can express) for pictures.
"""

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import models
from jssl.methods import base
from jssl.models import dvae as dvae_lib



def temperature_at(step, tau_start: float, tau_final: float, anneal_steps: int):
  """`tau_start * (tau_final / tau_start) ** min(step / anneal_steps, 1)` (float32)."""
  frac = jnp.clip(jnp.asarray(step, jnp.float32) / max(int(anneal_steps), 1), 0.0, 1.0)
  return jnp.asarray(tau_start * (tau_final / tau_start) ** frac, jnp.float32)


def kl_weight_at(step, kl_weight: float, warmup_steps: int):
  """`kl_weight * min(step / warmup_steps, 1)`; `kl_weight` from step 0 when warmup_steps = 0."""
  if warmup_steps <= 0:
    return jnp.asarray(kl_weight, jnp.float32)
  return kl_weight * jnp.clip(jnp.asarray(step, jnp.float32) / warmup_steps, 0.0, 1.0)


def perplexity(tokens: jax.Array, vocab_size: int) -> jax.Array:
  """exp(entropy) of the histogram of int `tokens` over [0, vocab_size)."""
  counts = jnp.zeros((vocab_size,), jnp.float32).at[jnp.reshape(tokens, (-1,))].add(1.0)
  p = counts / jnp.sum(counts)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))


@dataclasses.dataclass(frozen=True)
class DVAETokenizer(base.Method):
  """The dVAE as a jssl method (see the module docstring)."""
  model: nn.Module
  image_size: int = 32
  tau_start: float = 1.0
  tau_final: float = 1.0 / 16
  anneal_steps: int = 1
  kl_weight: float = 0.01
  kl_warmup_steps: int = 0
  hard: bool = False
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'dvae'
  recon_columns = ('original', 'reconstruction')  # picture columns, in order

  def __post_init__(self):
    if self.image_size % self.model.downsample:
      raise ValueError(f'dVAE: image_size {self.image_size} must be a multiple of the '
                       f'down-sampling 2**num_down = {self.model.downsample}')
    if not 0 < self.tau_final <= self.tau_start:
      raise ValueError(f'dVAE: need 0 < tau_final ({self.tau_final}) <= tau_start '
                       f'({self.tau_start})')

  @property
  def vocab_size(self) -> int:
    return self.model.vocab_size

  @property
  def grid(self) -> int:
    return self.image_size // self.model.downsample

  def temperature(self, step):
    return temperature_at(step, self.tau_start, self.tau_final, self.anneal_steps)

  def input_spec(self):
    return {'view_0': ((self.image_size, self.image_size, 3), jnp.float32)}

  def init(self, rng, batch):
    x = self.normalize(batch['view_0'][:2])
    return dvae_lib.init_params(self.model, rng, x), {}, {}

  def encode(self, params, x):
    return self.model.apply({'params': params}, x, method=dvae_lib.DVAE.encode)

  def decode(self, params, z):
    return self.model.apply({'params': params}, z, method=dvae_lib.DVAE.decode)

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    x = self.normalize(batch['view_0'])
    logits, _ = self.encode(params, x)
    tau = self.temperature(step)
    z = dvae_lib.gumbel_softmax(rng, logits, tau, self.hard)
    recon = self.decode(params, z)
    recon_loss = jnp.mean((recon - x) ** 2)
    log_q = jax.nn.log_softmax(logits, axis=-1)
    kl = jnp.mean(jnp.sum(jnp.exp(log_q) * log_q, axis=-1)) + math.log(self.vocab_size)
    kl_w = kl_weight_at(step, self.kl_weight, self.kl_warmup_steps)
    loss = recon_loss + kl_w * kl
    ppl = perplexity(jax.lax.stop_gradient(dvae_lib.tokens_of(logits)), self.vocab_size)
    metrics = {'loss': loss, 'recon_loss': recon_loss, 'kl': kl, 'temperature': tau,
               'kl_weight': kl_w, 'perplexity': ppl}
    return loss, (batch_stats, method_state, metrics)

  def tokens_normalized(self, params, x):
    """Visual tokens `[N, g * g]` of images already normalized by this tokenizer's mean / std."""
    return dvae_lib.tokens_of(self.encode(params, x)[0])

  def tokens(self, params, images):
    return self.tokens_normalized(params, self.normalize(images))

  def decode_tokens(self, params, tokens, grid=None):
    """Images in [0, 1] `[N, H, W, 3]` decoded from int tokens `[N, g * g]`."""
    g = grid or self.grid
    one_hot = jax.nn.one_hot(jnp.reshape(tokens, (-1, g, g)), self.vocab_size)
    out = self.decode(params, one_hot)
    return jnp.clip(out * jnp.asarray(self.std, jnp.float32) + jnp.asarray(self.mean, jnp.float32),
                    0.0, 1.0)

  def recon_images(self, params, batch_stats, method_state, images, rng):
    del batch_stats, method_state, rng
    images = jnp.asarray(images, jnp.float32)
    tokens = self.tokens(params, images)
    return {'original': images,
            'reconstruction': self.decode_tokens(params, tokens, images.shape[1] //
                                                 self.model.downsample)}

  def features(self, params, batch_stats, images):
    del batch_stats
    return self.encode(params, self.normalize(images))[1]


def model_from_config(model_cfg) -> dvae_lib.DVAE:
  """The DVAE of a `config.model` block (name 'dvae'; built by `jssl.models.from_config`)."""
  if model_cfg.name != 'dvae':
    raise ValueError(f"config.model.name must be 'dvae' for the dVAE tokenizer, got "
                     f'{model_cfg.name!r}')
  return models.from_config(model_cfg)


def from_config(config, total_steps: int = 0) -> DVAETokenizer:
  """The dVAE of a config: `model` is the network (see model_from_config) with the input mean /
  std; `method` the schedules (tau_start, tau_final, anneal_fraction of the run, kl_weight,
  kl_warmup_fraction of the run, hard)."""
  m, model = config.method, config.model
  total = max(int(total_steps), 1)
  return DVAETokenizer(
      model=model_from_config(model), image_size=models.image_size(config),
      tau_start=float(m.tau_start), tau_final=float(m.tau_final),
      anneal_steps=max(int(round(float(m.anneal_fraction) * total)), 1),
      kl_weight=float(m.kl_weight),
      kl_warmup_steps=int(round(float(m.kl_warmup_fraction) * total)), hard=bool(m.hard),
      mean=tuple(model.mean), std=tuple(model.std))
