"""The method interface: what the engine (jssl.train) calls, and nothing more.

A method is a frozen dataclass (hashable: jit closes over it as a constant) holding its networks
(Flax modules) and hyper-parameters. The engine owns one `TrainState` with
`params` (trained by the optimizer), `batch_stats` (BatchNorm running statistics of `params`'
networks) and `method_state` (any other pytree: teacher weights, queues, centres...), and runs

    loss, (batch_stats, method_state, metrics), grads = value_and_grad(loss_fn)(params, ...)
    new_params = optimizer(params, grads)
    new_params, method_state = update_state(params, new_params, method_state, step)

The five calls:
- `input_spec() -> {key: (per-example shape, dtype)}`: the batch keys the method reads (the
  benchmark builds synthetic batches from it; the data pipeline's recipe must provide them).
  Views are float32 in [0, 1]; `normalize` maps them to the network's input scale.
- `init(rng, batch) -> (params, batch_stats, method_state)`.
- `loss_fn(params, batch_stats, method_state, batch, rng, step)
     -> (loss, (new_batch_stats, new_method_state, metrics))`: pure and jit-able; `metrics` is a
  dict of scalars (the engine adds loss, grad and param norms, lr). `method_state` may change
  here with values of the forward pass (a queue push of this batch's keys, DINO's centre); the
  gradient never flows into it.
- `update_state(old_params, params, method_state, step) -> (params, method_state)`: after the
  optimizer: EMA teachers, prototype re-normalization, undoing updates of frozen parameters.
  `step` is the 0-based index of the step just taken.
- `features(params, batch_stats, images) -> [N, F]`: backbone features in inference mode for
  kNN / linear probe, images in [0, 1].

How the other planned methods fit, with no change to the engine:
- NNCLR: `method_state = {'support': queue}` (ema.queue_init); loss_fn takes the nearest
  neighbours of z1 in the support set (losses.nearest_neighbors) for info_nce and returns the
  queue with this batch's z1 pushed (ema.queue_push).
- MoCo v2: `method_state = {'key_params', 'key_batch_stats', 'queue'}`; loss_fn runs the key
  encoder (its own BN; shuffled BN via jax.shard_map inside loss_fn if wanted), moco_loss against
  the queue, returns the queue with the keys pushed; update_state EMAs key_params. MoCo v3: no
  queue, the same momentum encoder, symmetrized info_nce.
- DINO: `method_state = {'teacher_params', 'teacher_batch_stats', 'center'}`; multi-crop is just
  more batch keys in input_spec (`view_0..view_{V-1}` at two resolutions, each crop size run
  through the student separately); loss_fn returns the new centre (losses.dino_center);
  update_state EMAs the teacher with the cosine schedule (ema.cosine_momentum); the teacher
  temperature warm-up is a function of `step`.
- SwAV: prototypes are a Dense layer in `params`; loss_fn uses losses.swav_loss (optionally a
  queue in method_state); update_state re-normalizes the prototype rows and, during the first
  epoch (`step < freeze_steps`), keeps `old_params`' prototypes (frozen).
- MAE / SimMIM / BEiT: a single view plus `mask` (or the mask drawn from `rng` in loss_fn);
  `method_state` is empty (BEiT's frozen dVAE tokenizer weights may sit in method_state, never
  in params, so the optimizer does not touch them).
- SimSiam, VICReg, Barlow Twins, MeanShift: SimCLR's shape with another loss (MeanShift: a bank
  queue and a momentum target, as MoCo).
"""

import abc
from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class Method(abc.ABC):
  """Base class; subclasses are `@dataclasses.dataclass(frozen=True)` with `mean`, `std` fields."""

  name: str = 'method'
  mean: tuple = CIFAR10_MEAN
  std: tuple = CIFAR10_STD

  @abc.abstractmethod
  def input_spec(self) -> dict:
    """`{batch key: (per-example shape, dtype)}` of the inputs loss_fn reads."""

  @abc.abstractmethod
  def init(self, rng: jax.Array, batch: dict) -> tuple[PyTree, PyTree, PyTree]:
    """`(params, batch_stats, method_state)` for a sample batch."""

  @abc.abstractmethod
  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    """`(loss, (new_batch_stats, new_method_state, metrics))`."""

  def update_state(self, old_params, params, method_state, step):
    """`(params, method_state)` after the optimizer step; identity by default."""
    del old_params, step
    return params, method_state

  @abc.abstractmethod
  def features(self, params, batch_stats, images) -> jax.Array:
    """Backbone features `[N, F]` of images in [0, 1], in inference mode."""

  def normalize(self, images: jax.Array) -> jax.Array:
    """Images in [0, 1] -> standardized by the dataset mean and std (float32)."""
    images = jnp.asarray(images, jnp.float32)
    return (images - jnp.asarray(self.mean, jnp.float32)) / jnp.asarray(self.std, jnp.float32)
