"""Deep metric learning losses: contrastive margin loss and triplet loss."""

import jax
import jax.numpy as jnp

from jssl.losses import _common as c


def margin_loss(x1: jax.Array, x2: jax.Array, y: jax.Array, *, margin: float = 1.0,
                p: float = 2.0) -> jax.Array:
  """Margin (contrastive) loss of a pair of embeddings with a similarity label.

  `d_i = ||x1_i - x2_i||_p`, `y_i in {-1, +1}`; `loss = mean_i max(0, y_i (d_i - margin))`:
  similar pairs (y = +1) pay when farther than the margin, dissimilar ones (y = -1) when closer.
  (The hinge form of the contrastive loss of Hadsell, Chopra & LeCun, 2006, with one margin for
  both labels; see docs/losses.md.)

  Args:
    x1, x2: `[N, D]` embeddings.
    y: `[N]` labels in {-1, +1}.
  """
  c.assert_rank('x1', x1, 2)
  c.assert_same_shape('x1 and x2', x1, x2)
  c.assert_rank('y', y, 1)
  if jnp.shape(y)[0] != jnp.shape(x1)[0]:
    raise ValueError(f'y must have one label per row of x1: y {jnp.shape(y)}, x1 {jnp.shape(x1)}')
  d = c.p_norm(c.f32(x1) - c.f32(x2), p)
  return jnp.mean(jax.nn.relu(c.f32(y) * (d - margin)))


def triplet_loss(anchor: jax.Array, positive: jax.Array, negative: jax.Array, *,
                 margin: float = 1.0, p: float = 2.0) -> jax.Array:
  """Triplet loss (Schroff et al., FaceNet, 2015).

  `loss = mean_i max(0, ||a_i - p_i||_p - ||a_i - n_i||_p + margin)`.

  Args:
    anchor, positive, negative: `[N, D]` embeddings.
  """
  c.assert_rank('anchor', anchor, 2)
  c.assert_same_shape('anchor, positive and negative', anchor, positive, negative)
  a = c.f32(anchor)
  d_pos = c.p_norm(a - c.f32(positive), p)
  d_neg = c.p_norm(a - c.f32(negative), p)
  return jnp.mean(jax.nn.relu(d_pos - d_neg + margin))
