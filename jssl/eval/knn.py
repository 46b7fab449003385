"""Weighted k-nearest-neighbour classification on frozen features (InstDisc, Wu et al., 2018; DINO).

For a query q and a bank of (feature, label) pairs, with every feature L2-normalized:
`s_j = <q, x_j>` (cosine similarity), `N_k(q)` = the k bank rows of largest `s_j`,
`vote_c = sum_{j in N_k(q), y_j = c} exp(s_j / T)`, prediction `argmax_c vote_c`.
"""

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  """`x / max(||x||_2, eps)` over the last axis, in float32."""
  x = jnp.asarray(x, jnp.float32)
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), eps)


def pixel_features(images: jax.Array) -> jax.Array:
  """The raw-pixel baseline's features: flatten, remove the per-image mean, L2-normalize.

  `f = (x - mean(x)) / ||x - mean(x)||_2` with `x` the `H*W*C` pixels of one image in [0, 1].
  The result does not depend on the pixel scale, so uint8 images in [0, 255] give the same
  features (up to rounding).
  """
  x = jnp.reshape(jnp.asarray(images, jnp.float32), (jnp.shape(images)[0], -1))
  return l2_normalize(x - jnp.mean(x, axis=1, keepdims=True))


def knn_votes(bank: jax.Array, bank_labels: jax.Array, bank_valid: jax.Array,
              queries: jax.Array, *, num_classes: int, ks: Sequence[int],
              temperature: float) -> jax.Array:
  """Class votes `[Q, len(ks), num_classes]` of the k nearest valid bank rows, for each k.

  Bank and queries must already be L2-normalized. `vote[q, i, c] = sum over the ks[i] rows j of
  largest s_qj with label c of exp(s_qj / T)`. Invalid bank rows get similarity -inf, hence
  weight `exp(-inf) = 0` if ever selected (only when k exceeds the valid bank size).
  """
  sims = jnp.dot(queries, bank.T, precision=jax.lax.Precision.HIGHEST)
  sims = jnp.where(bank_valid[None, :], sims, -jnp.inf)
  top_sims, top_idx = jax.lax.top_k(sims, max(ks))  # sorted: the first k are the top k
  weights = jnp.exp(top_sims / temperature)
  onehot = jax.nn.one_hot(bank_labels[top_idx], num_classes, dtype=jnp.float32)
  return jnp.stack([jnp.einsum('qk,qkc->qc', weights[:, :k], onehot[:, :k]) for k in ks], axis=1)


def _knn_correct(bank, bank_labels, bank_valid, queries, query_labels, query_valid, *,
                 num_classes, ks, temperature, batch_size):
  """Number of correct valid queries for each k in `ks`, the queries taken in chunks."""
  bank = l2_normalize(bank)
  nq = queries.shape[0]
  nchunks = -(-nq // batch_size)
  pad = nchunks * batch_size - nq
  queries = jnp.pad(l2_normalize(queries), ((0, pad), (0, 0)))
  query_labels = jnp.pad(query_labels, (0, pad))
  query_valid = jnp.pad(query_valid, (0, pad))
  chunks = (queries.reshape(nchunks, batch_size, -1), query_labels.reshape(nchunks, batch_size),
            query_valid.reshape(nchunks, batch_size))

  def one_chunk(args):
    q, y, v = args
    votes = knn_votes(bank, bank_labels, bank_valid, q, num_classes=num_classes, ks=ks,
                      temperature=temperature)
    correct = (jnp.argmax(votes, axis=-1) == y[:, None]) & v[:, None]
    return jnp.sum(correct, axis=0, dtype=jnp.int32)

  return jnp.sum(jax.lax.map(one_chunk, chunks), axis=0)


_knn_correct_jit = jax.jit(
    _knn_correct, static_argnames=('num_classes', 'ks', 'temperature', 'batch_size'))


def weighted_knn(train_feats, train_labels, test_feats, test_labels, *, num_classes: int,
                 k: Sequence[int] = (20, 200), temperature: float = 0.07,
                 batch_size: int = 256, train_valid=None, test_valid=None) -> dict:
  """Top-1 accuracy of the weighted kNN classifier (module docstring) for each k.

  Jitted; the test rows go through in chunks of `batch_size`, so memory is
  `O(N_train * F + batch_size * N_train)`: 50k x 10k fits easily. Rows whose `*_valid` is False
  (padding) are ignored: neither neighbours nor counted queries. A k larger than the bank is
  clipped to the bank size.

  Args:
    train_feats: `[N, F]` bank features (need not be normalized); train_labels: `[N]` ints.
    test_feats: `[M, F]` query features; test_labels: `[M]` ints.
    num_classes: number of classes; k: neighbour counts; temperature: T of `exp(s / T)`.
    train_valid, test_valid: optional `[N]` / `[M]` bool masks.

  Returns:
    `{'knn_top1_k{k}': accuracy in [0, 1]}` for each k (Python floats).
  """
  train_feats, test_feats = jnp.asarray(train_feats), jnp.asarray(test_feats)
  if train_feats.ndim != 2 or test_feats.ndim != 2 or train_feats.shape[1] != test_feats.shape[1]:
    raise ValueError(f'features must be [N, F] and [M, F] with the same F: train '
                     f'{train_feats.shape}, test {test_feats.shape}')
  n, m = train_feats.shape[0], test_feats.shape[0]
  train_valid = jnp.ones((n,), bool) if train_valid is None else jnp.asarray(train_valid, bool)
  test_valid = jnp.ones((m,), bool) if test_valid is None else jnp.asarray(test_valid, bool)
  ks = tuple(int(x) for x in k)
  kk = tuple(min(x, n) for x in ks)
  correct = _knn_correct_jit(
      train_feats, jnp.asarray(train_labels, jnp.int32), train_valid, test_feats,
      jnp.asarray(test_labels, jnp.int32), test_valid, num_classes=int(num_classes), ks=kk,
      temperature=float(temperature), batch_size=int(min(batch_size, max(m, 1))))
  correct = np.asarray(correct)
  total = max(int(np.sum(np.asarray(test_valid))), 1)
  return {f'knn_top1_k{x}': float(c) / total for x, c in zip(ks, correct)}


def pixel_knn(train_images, train_labels, test_images, test_labels, *, num_classes: int,
              k: Sequence[int] = (20, 200), temperature: float = 0.07, batch_size: int = 256,
              train_valid=None, test_valid=None) -> dict:
  """The raw-pixel baseline: `weighted_knn` on `pixel_features` of images in [0, 1].

  Returns `{'knn_top1_k{k}': ...}` as `weighted_knn`.
  """
  return weighted_knn(pixel_features(train_images), train_labels, pixel_features(test_images),
                      test_labels, num_classes=num_classes, k=k, temperature=temperature,
                      batch_size=batch_size, train_valid=train_valid, test_valid=test_valid)
