"""Tests of jssl.eval.knn against an independent float64 NumPy reference, one query at a time."""

import numpy as np
import pytest

from jssl.eval import knn


def votes_ref(train, train_y, query, *, num_classes, k, temperature):
  """Class votes of one query: sum over its k most cosine-similar rows of exp(s / T)."""
  train = np.asarray(train, np.float64)
  train = train / np.linalg.norm(train, axis=1, keepdims=True)
  q = np.asarray(query, np.float64)
  q = q / np.linalg.norm(q)
  s = train @ q
  nearest = np.argsort(-s, kind='stable')[:k]
  votes = np.zeros(num_classes)
  for j in nearest:
    votes[train_y[j]] += np.exp(s[j] / temperature)
  return votes


def knn_ref(train, train_y, test, test_y, *, num_classes, k, temperature):
  """(top-1 accuracy, per-query votes) of the weighted kNN in float64."""
  votes = np.stack([votes_ref(train, train_y, q, num_classes=num_classes, k=k,
                              temperature=temperature) for q in test])
  return float(np.mean(np.argmax(votes, 1) == test_y)), votes


def clustered(rng, n, num_classes, dim, spread):
  """Gaussian clusters around random centres: labels [n], features [n, dim]."""
  centres = rng.normal(size=(num_classes, dim))
  y = rng.integers(0, num_classes, size=n)
  return centres[y] + spread * rng.normal(size=(n, dim)), y


@pytest.mark.parametrize('temperature', [0.07, 0.5])
def test_matches_float64_reference(temperature):
  rng = np.random.default_rng(0)
  c, dim = 5, 16
  x, y = clustered(rng, 420, c, dim, spread=2.0)  # overlapping clusters: far from 100%
  train, train_y, test, test_y = x[:300], y[:300], x[300:], y[300:]
  res = knn.weighted_knn(train.astype(np.float32), train_y, test.astype(np.float32), test_y,
                         num_classes=c, k=(5, 20, 50), temperature=temperature, batch_size=32)
  assert set(res) == {'knn_top1_k5', 'knn_top1_k20', 'knn_top1_k50'}
  for k in (5, 20, 50):
    acc, votes = knn_ref(train, train_y, test, test_y, num_classes=c, k=k,
                         temperature=temperature)
    # Queries whose best two classes are within float32 noise could flip; none here, but allow.
    top2 = np.sort(votes, 1)[:, -2:]
    ambiguous = np.sum(top2[:, 1] - top2[:, 0] < 1e-4 * top2[:, 1])
    assert abs(res[f'knn_top1_k{k}'] - acc) <= ambiguous / len(test_y) + 1e-9
    assert 0.2 < acc < 0.95  # a non-trivial problem


def test_votes_match_reference():
  rng = np.random.default_rng(1)
  train, train_y = clustered(rng, 200, 4, 8, spread=1.0)
  test = rng.normal(size=(10, 8))
  bank = knn.l2_normalize(train.astype(np.float32))
  q = knn.l2_normalize(test.astype(np.float32))
  votes = np.asarray(knn.knn_votes(bank, train_y, np.ones(200, bool), q, num_classes=4,
                                   ks=(3, 30), temperature=0.1))
  for i, k in enumerate((3, 30)):
    ref = np.stack([votes_ref(train, train_y, t, num_classes=4, k=k, temperature=0.1)
                    for t in test])
    np.testing.assert_allclose(votes[:, i], ref, rtol=1e-4)


def test_separable_is_perfect():
  rng = np.random.default_rng(2)
  c = 10
  x, y = clustered(rng, 1200, c, 32, spread=0.05)
  res = knn.weighted_knn(x[:1000], y[:1000], x[1000:], y[1000:], num_classes=c, k=(1, 20, 200))
  assert res == {'knn_top1_k1': 1.0, 'knn_top1_k20': 1.0, 'knn_top1_k200': 1.0}


def test_valid_masks_equal_dropping_rows():
  rng = np.random.default_rng(3)
  x, y = clustered(rng, 400, 3, 8, spread=1.5)
  x = x.astype(np.float32)
  train_valid = rng.random(300) < 0.7
  test_valid = rng.random(100) < 0.6
  # Padding rows are garbage that would change every answer if used.
  train = np.where(train_valid[:, None], x[:300], 1e3 * rng.normal(size=(300, 8)))
  train_y = np.where(train_valid, y[:300], 0)
  masked = knn.weighted_knn(train, train_y, x[300:], y[300:], num_classes=3, k=(10, 50),
                            train_valid=train_valid, test_valid=test_valid, batch_size=16)
  dropped = knn.weighted_knn(x[:300][train_valid], y[:300][train_valid], x[300:][test_valid],
                             y[300:][test_valid], num_classes=3, k=(10, 50))
  assert masked == dropped


def test_k_larger_than_bank_is_clipped():
  rng = np.random.default_rng(4)
  x, y = clustered(rng, 60, 3, 4, spread=0.3)
  res = knn.weighted_knn(x[:40], y[:40], x[40:], y[40:], num_classes=3, k=(20, 200))
  acc, _ = knn_ref(x[:40], y[:40], x[40:], y[40:], num_classes=3, k=40, temperature=0.07)
  assert res['knn_top1_k200'] == pytest.approx(acc)


def test_pixel_features_and_pixel_knn():
  rng = np.random.default_rng(5)
  images = rng.random((6, 4, 4, 3)).astype(np.float32)
  f = np.asarray(knn.pixel_features(images))
  ref = images.reshape(6, -1).astype(np.float64)
  ref = ref - ref.mean(1, keepdims=True)
  ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
  np.testing.assert_allclose(f, ref, atol=1e-6)
  # Brightness and contrast changes leave the direction (x - mean) unchanged: pixel kNN with
  # templates per class finds the right class for shifted / scaled copies.
  templates = rng.random((3, 8, 8, 3)).astype(np.float32)
  train = np.concatenate([0.5 * templates + 0.2 * i for i in range(3)])
  train_y = np.tile(np.arange(3), 3)
  test = 0.8 * templates + 0.1
  res = knn.pixel_knn(train, train_y, test, np.arange(3), num_classes=3, k=(1, 3))
  assert res == {'knn_top1_k1': 1.0, 'knn_top1_k3': 1.0}


def test_shape_errors():
  with pytest.raises(ValueError, match='same F'):
    knn.weighted_knn(np.zeros((5, 3)), np.zeros(5), np.zeros((2, 4)), np.zeros(2),
                     num_classes=2)


# --- jssl.eval.features and jssl.eval.evaluate (kNN-centred; the probe has its own file) ---

from jssl.eval import evaluate as evaluate_lib  # noqa: E402
from jssl.eval import features  # noqa: E402


def toy_batches(images, labels, batch_size):
  """Batches as the eval pipeline yields them: the last one padded, `valid` marking real rows."""
  n = len(labels)
  out = []
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size)
    valid = idx < n
    idx = np.where(valid, idx, 0)
    out.append({'view_0': images[idx], 'label': labels[idx].astype(np.int32), 'valid': valid})
  return out


def toy_images(rng, n, num_classes=3, size=4, spread=0.1):
  """Images in [0, 1]: a class template plus noise."""
  templates = rng.random((num_classes, size, size, 3))
  y = rng.integers(0, num_classes, size=n)
  x = np.clip(templates[y] + spread * rng.normal(size=(n, size, size, 3)), 0, 1)
  return x.astype(np.float32), y.astype(np.int32)


def mean_colour(images):
  return images.mean(axis=(1, 2))


def test_extract_features_drops_padding_and_caps():
  rng = np.random.default_rng(6)
  x, y = toy_images(rng, 23)
  batches = toy_batches(x, y, 8)
  feats, labels = features.extract_features(mean_colour, batches)
  np.testing.assert_allclose(feats, x.mean(axis=(1, 2)), rtol=1e-6)
  np.testing.assert_array_equal(labels, y)
  feats, labels = features.extract_features(mean_colour, iter(batches), max_examples=11)
  assert feats.shape == (11, 3)
  np.testing.assert_array_equal(labels, y[:11])
  feats, labels = features.extract_features(mean_colour, batches, max_examples=11)
  assert feats.shape == (11, 3)  # batches 0 and 2 (stride 24 // 11), truncated to 11 rows
  np.testing.assert_array_equal(labels, np.concatenate([y[:8], y[16:19]]))


def test_extract_features_bound_params_and_global_arrays():
  """Parameters passed through `bind`; batches as global arrays sharded over 8 devices."""
  import jax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  rng = np.random.default_rng(7)
  x, y = toy_images(rng, 30)
  w = rng.normal(size=(48, 5)).astype(np.float32)
  mesh = Mesh(np.array(jax.devices()), ('data',))
  sharding = NamedSharding(mesh, P('data'))
  batches = [{k: jax.device_put(v, sharding) for k, v in b.items()}
             for b in toy_batches(x, y, 8 * (len(jax.devices()) // 8 or 1))]
  fn = features.bind(lambda w, images: images.reshape(images.shape[0], -1) @ w, w)
  feats, labels = features.extract_features(fn, batches)
  np.testing.assert_allclose(feats, x.reshape(30, -1).astype(np.float64) @ w, rtol=1e-4,
                             atol=1e-4)
  np.testing.assert_array_equal(labels, y)


def small_eval_cfg(linear_probe):
  cfg = evaluate_lib.eval_config()
  cfg.knn_k = (5, 20)
  cfg.linear_probe = linear_probe
  cfg.linear.epochs = 5
  cfg.linear.batch_size = 32
  return cfg


def test_evaluate_equals_its_parts():
  rng = np.random.default_rng(8)
  x, y = toy_images(rng, 140, spread=0.3)
  flat = lambda images: images.reshape(images.shape[0], -1)  # noqa: E731
  cfg = small_eval_cfg(linear_probe=True)
  res = evaluate_lib.evaluate(flat, toy_batches(x[:100], y[:100], 16),
                              toy_batches(x[100:], y[100:], 16), num_classes=3, eval_cfg=cfg)
  f = x.reshape(140, -1)
  ref = weighted_knn_ref_dict(f[:100], y[:100], f[100:], y[100:], k=(5, 20))
  assert {k: res[k] for k in ref} == pytest.approx(ref)
  assert res['knn_top1'] == res['knn_top1_k5']
  from jssl.eval import linear_probe as lp
  probe = lp.linear_probe(f[:100], y[:100], f[100:], y[100:], num_classes=3,
                          **cfg.linear.to_dict())
  assert res['linear_top1'] == probe['linear_top1']
  assert res['num_train'] == 100 and res['num_eval'] == 40


def weighted_knn_ref_dict(train, train_y, test, test_y, *, k, num_classes=3, temperature=0.07):
  return {f'knn_top1_k{kk}': knn_ref(train, train_y, test, test_y, num_classes=num_classes,
                                     k=kk, temperature=temperature)[0] for kk in k}


def raw_batches(images_u8, labels, batch_size):
  """The raw-pixel iterator's batches: uint8 images under 'image'."""
  return [{'image': b['view_0'], 'label': b['label'], 'valid': b['valid']}
          for b in toy_batches(images_u8, labels, batch_size)]


@pytest.mark.parametrize('with_recipe_batches', [False, True])
def test_baselines(with_recipe_batches):
  rng = np.random.default_rng(9)
  x, y = toy_images(rng, 90, spread=0.3)
  x_u8 = np.round(255 * x).astype(np.uint8)
  x = x_u8.astype(np.float32) / 255  # what the eval recipe gives for a 1:1 resize
  w = rng.normal(size=(48, 6)).astype(np.float32)
  random_fn = features.bind(lambda w, images: images.reshape(images.shape[0], -1) @ w, w)
  cfg = small_eval_cfg(linear_probe=False)
  kw = {}
  if with_recipe_batches:
    kw = dict(train_batches=toy_batches(x[:60], y[:60], 16),
              eval_batches=toy_batches(x[60:], y[60:], 16))
  res = evaluate_lib.baselines(raw_batches(x_u8[:60], y[:60], 16),
                               raw_batches(x_u8[60:], y[60:], 16), random_fn, num_classes=3,
                               eval_cfg=cfg, **kw)
  pix = x_u8.reshape(90, -1).astype(np.float64)
  pix = pix - pix.mean(1, keepdims=True)
  ref_pix = weighted_knn_ref_dict(pix[:60], y[:60], pix[60:], y[60:], k=(5, 20))
  rnd = x.reshape(90, -1).astype(np.float64) @ w
  ref_rnd = weighted_knn_ref_dict(rnd[:60], y[:60], rnd[60:], y[60:], k=(5, 20))
  assert res['knn_top1_pixels'] == pytest.approx(ref_pix['knn_top1_k5'])
  assert res['knn_top1_pixels_k20'] == pytest.approx(ref_pix['knn_top1_k20'])
  assert res['knn_top1_random_init'] == pytest.approx(ref_rnd['knn_top1_k5'])
  assert res['knn_top1_random_init_k20'] == pytest.approx(ref_rnd['knn_top1_k20'])


def test_max_examples_spread_over_a_sized_iterable():
  """Class-sorted data: a cap keeps rows from every part of the iterable, not the first ones."""
  x = np.repeat(np.arange(10, dtype=np.float32), 20)[:, None, None, None] * np.ones((1, 2, 2, 3))
  y = np.repeat(np.arange(10), 20).astype(np.int32)
  batches = toy_batches(x.astype(np.float32), y, 10)  # a list: has len()
  _, labels = features.extract_features(mean_colour, batches, max_examples=100)
  np.testing.assert_array_equal(np.bincount(labels), np.full(10, 10))  # every other batch
  _, labels = features.extract_features(mean_colour, iter(batches), max_examples=100)
  np.testing.assert_array_equal(labels, y[:100])  # no len(): the first rows
