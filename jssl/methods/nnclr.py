"""NNCLR (Dwibedi et al., 2021): contrast nearest neighbours from a support set of past embeddings.

- params: `{'backbone', 'projector', 'predictor'}` (projector (Dense-BN-ReLU) x 2, Dense, BN:
  2048-2048-256; predictor 4096-256).
- method_state: `{'support': queue}`, a FIFO queue (ema.queue_*) of `support_size` past
  L2-normalized view-1 projections.
- loss: `info_nce(NN(z1), p2) / 2 + info_nce(NN(z2), p1) / 2` (losses.info_nce at
  `temperature`, losses.nearest_neighbors: the support row of highest cosine, gradient-free).
  Both views go through the network as one batch of 2N; the negatives span the global batch.
- loss_fn returns the queue with this batch's normalized z1 pushed (after the neighbours are
  taken, so a batch never finds itself); no gradient flows into it.
- Before the queue is full only its filled rows are searched: the support is the filled rows
  tiled to the full size (duplicates do not change a nearest neighbour), and on the very first
  step, with the queue empty, the batch's own normalized z1 (NN(z1) = z1: plain contrastive).
  An empty (zero) row is never picked. (The paper's and solo-learn's code instead start from
  random unit vectors.)
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import losses
from jssl.methods import base, ema, two_view


def filled_support(queue: dict, fallback: jax.Array) -> jax.Array:
  """The queue's `[size, D]` rows with the unfilled ones replaced by filled rows (tiled), or
  by tiled rows of `fallback` while the queue is empty. A full queue is returned as it is."""
  items, count = queue['items'], queue['count']
  idx = jnp.arange(items.shape[0])

  def partial():
    fill = jnp.take(items, idx % jnp.maximum(count, 1), axis=0)
    own = jnp.take(fallback.astype(items.dtype), idx % fallback.shape[0], axis=0)
    return jnp.where(count > 0, fill, own)

  return jax.lax.cond(count >= items.shape[0], lambda: items, partial)


@dataclasses.dataclass(frozen=True)
class NNCLR(two_view.TwoViewMethod):
  """NNCLR with `backbone`, `projector` and `predictor` modules and a support queue."""
  backbone: nn.Module
  projector: nn.Module
  predictor: nn.Module
  proj_dim: int = 256
  support_size: int = 98304
  temperature: float = 0.1
  image_size: int = 32
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'nnclr'

  def init_state(self, params, batch_stats):
    del params, batch_stats
    return {'support': ema.queue_init(self.support_size, self.proj_dim)}

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    del rng, step
    (z1, z2), (p1, p2), batch_stats = self.embed(params, batch_stats, batch)
    z1 = jax.lax.stop_gradient(losses.normalize(jnp.asarray(z1, jnp.float32)))
    z2 = jax.lax.stop_gradient(losses.normalize(jnp.asarray(z2, jnp.float32)))
    queue = method_state['support']
    support = filled_support(queue, z1)
    nn1 = losses.nearest_neighbors(z1, support)
    nn2 = losses.nearest_neighbors(z2, support)
    loss = (losses.info_nce(nn1, p2, temperature=self.temperature) / 2 +
            losses.info_nce(nn2, p1, temperature=self.temperature) / 2)
    new_state = dict(method_state, support=ema.queue_push(queue, z1))
    metrics = {'loss': loss, 'support_filled': queue['count'] / queue['items'].shape[0]}
    return loss, (batch_stats, new_state, metrics)


def from_config(config, total_steps: int) -> NNCLR:
  """NNCLR from `config.method`: proj_hidden_dims, proj_dim, proj_last_bn, pred_hidden_dims,
  support_size, temperature."""
  del total_steps
  m = config.method
  return NNCLR(projector=two_view.mlp(config, m.proj_hidden_dims, m.proj_dim, m.proj_last_bn),
               predictor=two_view.mlp(config, m.pred_hidden_dims, m.proj_dim),
               proj_dim=int(m.proj_dim), support_size=int(m.support_size),
               temperature=float(m.temperature), **two_view.common_kwargs(config))
