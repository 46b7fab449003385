"""The view recipes: interface, determinism, geometry bounds, probabilities, and host (TF) vs
device (JAX) photometric paths agreeing in distribution."""

import math
import os
import tarfile

import jax
import ml_collections
import numpy as np
import pytest
import scipy.stats
import tensorflow as tf

from jssl.data import augment
from jssl.data import augment_jax
from jssl.data import augment_ops
from jssl.data import show

# CIFAR-10's test split as a tar.gz of JPEG class folders: $JSSL_CIFAR10_DIR/test.tar.gz, by
# default the data folder beside the checkout.
CIFAR_TEST = os.path.join(os.environ.get('JSSL_CIFAR10_DIR', os.path.join(
    os.path.dirname(__file__), '..', '..', 'shared', 'data', 'cifar10')), 'test.tar.gz')
# Small sizes keep the per-recipe checks fast; the defaults are checked separately.
FAST = {
    'simclr': dict(image_size=64), 'simclr_cifar': {}, 'byol': dict(image_size=64),
    'byol_cifar': {}, 'multicrop': dict(global_size=64, local_size=32, n_local=1),
    'mae': dict(image_size=64), 'simmim': dict(image_size=64, mask_patch_size=16,
                                                model_patch_size=8),
    'beit': dict(image_size=64, patch_size=8, num_masking_patches=26),
    'eval': dict(image_size=48),
}


def _smooth_image(h=80, w=96, seed=0):
  """A smooth colour uint8 image: low-frequency noise, upsampled."""
  rs = np.random.RandomState(seed)
  small = rs.rand(4, 5, 3).astype(np.float32)
  big = tf.image.resize(small, (h, w), 'bicubic').numpy()
  return (np.clip(big, 0, 1) * 255).round().astype(np.uint8)


def _run(recipe, images, seeds):
  """recipe over (images[i], seeds[i]) inside tf.data.Dataset.map: a dict of stacked numpy."""
  ds = tf.data.Dataset.from_tensor_slices((np.stack(images), np.asarray(seeds, np.int64)))
  ds = ds.map(recipe, num_parallel_calls=2).batch(len(seeds))
  return {k: v.numpy() for k, v in next(iter(ds)).items()}


def _seeds(n, base=0):
  return [[base, i] for i in range(n)]


@pytest.mark.parametrize('name', sorted(FAST))
def test_recipe_outputs_and_determinism(name):
  recipe = augment.make_recipe(name, **FAST[name])
  image = _smooth_image()
  out = _run(recipe, [image] * 3, [[7, 1], [7, 1], [7, 2]])
  names = [f'view_{i}' for i in range(len(recipe.views))]
  assert list(out) == names + (['mask'] if name in ('simmim', 'beit') else [])
  for key, shape in recipe.view_shapes.items():
    assert out[key].shape == (3,) + shape, key
    if key == 'mask':
      assert out[key].dtype == np.int32
      assert set(np.unique(out[key])) <= {0, 1}
    else:
      assert out[key].dtype == np.float32
      assert 0.0 <= out[key].min() and out[key].max() <= 1.0
  for key in out:
    np.testing.assert_array_equal(out[key][0], out[key][1], err_msg=key)
  if name == 'eval':
    np.testing.assert_array_equal(out['view_0'][0], out['view_0'][2])
  else:
    assert not np.array_equal(out['view_0'][0], out['view_0'][2])
  # Eager calls agree with tf.data's graph.
  eager = recipe(tf.constant(image), tf.constant([7, 1], tf.int64))
  for key in out:
    np.testing.assert_allclose(eager[key].numpy(), out[key][0], atol=1e-5, err_msg=key)


def test_default_shapes():
  shapes = {n: augment.make_recipe(n).view_shapes for n in augment.RECIPES}
  assert shapes['simclr'] == {'view_0': (224, 224, 3), 'view_1': (224, 224, 3)}
  assert shapes['byol_cifar'] == {'view_0': (32, 32, 3), 'view_1': (32, 32, 3)}
  assert list(shapes['multicrop']) == [f'view_{i}' for i in range(8)]
  assert shapes['multicrop']['view_1'] == (224, 224, 3)
  assert shapes['multicrop']['view_2'] == (96, 96, 3)
  assert shapes['simmim']['mask'] == (14, 14) and shapes['beit']['mask'] == (14, 14)
  assert shapes['eval'] == {'view_0': (224, 224, 3)}


def test_defaults_match_the_papers():
  simclr = augment.recipe_defaults('simclr')
  assert (simclr['brightness'], simclr['contrast'], simclr['saturation'], simclr['hue']) == (
      0.8, 0.8, 0.8, 0.2)
  assert simclr['jitter_p'] == 0.8 and simclr['gray_p'] == 0.2 and simclr['blur_p'] == (0.5, 0.5)
  assert augment.recipe_defaults('simclr_cifar')['blur_p'] == (0.0, 0.0)
  byol = augment.make_recipe('byol')
  v0, v1 = (v.photometric for v in byol.views)
  assert (v0.blur_p, v0.solarize_p, v1.blur_p, v1.solarize_p) == (1.0, 0.0, 0.1, 0.2)
  assert (v0.brightness, v0.contrast, v0.saturation, v0.hue) == (0.4, 0.4, 0.2, 0.1)
  assert v0.blur_kernel == 23 and v0.blur_sigma == (0.1, 2.0)
  mc = augment.make_recipe('multicrop')
  blur = [v.photometric.blur_p for v in mc.views]
  solar = [v.photometric.solarize_p for v in mc.views]
  assert blur == [1.0, 0.1] + [0.5] * 6 and solar == [0.0, 0.2] + [0.0] * 6
  assert [v.scale for v in mc.views[:3]] == [(0.4, 1.0), (0.4, 1.0), (0.05, 0.4)]
  assert mc.views[2].photometric.blur_kernel == 9
  assert augment.recipe_defaults('mae')['scale'] == (0.2, 1.0)
  assert augment.recipe_defaults('simmim')['scale'] == (0.67, 1.0)


def test_defaults_fit_a_config_dict():
  for name in augment.RECIPES:
    cfg = ml_collections.ConfigDict(augment.recipe_defaults(name))
    cfg_dict = cfg.to_dict()
    recipe = augment.make_recipe(name, **cfg_dict)
    assert recipe.params == augment.recipe_defaults(name)
  # Lists and ints where tuples and floats are expected are accepted.
  recipe = augment.make_recipe('simclr', scale=[0.2, 1], blur_p=[1, 0], brightness=1)
  assert recipe.params['scale'] == (0.2, 1.0) and recipe.params['blur_p'] == (1.0, 0.0)


def test_unknown_names_raise():
  with pytest.raises(ValueError, match=r"unknown recipe 'simclr2'.*simclr, simclr_cifar"):
    augment.make_recipe('simclr2')
  with pytest.raises(ValueError, match=r"unknown recipe 'nope'"):
    augment.recipe_defaults('nope')
  with pytest.raises(ValueError, match=r"unknown parameter 'blur'.*blur_p, blur_sigma"):
    augment.make_recipe('byol', blur=0.5)
  with pytest.raises(ValueError, match="'scale'"):
    augment.make_recipe('mae', scale=(0.9, 0.2))
  with pytest.raises(ValueError, match="'global_blur_p'"):
    augment.make_recipe('multicrop', n_global=3)
  with pytest.raises(ValueError, match="'image_size'"):
    augment.make_recipe('beit', image_size=100)
  with pytest.raises(ValueError, match='uint8'):
    augment.make_recipe('mae')(tf.zeros([8, 8, 3]), tf.constant([0, 0], tf.int64))


def test_crop_window_bounds():
  """torchvision's RandomResizedCrop window: area in scale, aspect ratio in ratio, inside."""
  h, w, n = 300, 400, 300
  for scale, ratio in [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.05, 0.4), (3 / 4, 4 / 3)),
                       ((0.67, 1.0), (0.5, 2.0))]:
    fn = lambda s: tf.stack(augment_ops.crop_window([h, w], s, scale, ratio))
    boxes = tf.data.Dataset.from_tensor_slices(np.array(_seeds(n))).map(fn).batch(n)
    top, left, ch, cw = next(iter(boxes)).numpy().T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + ch <= h).all() and (left + cw <= w).all()
    area = ch * cw / (h * w)
    slack = (ch + cw + 1) / (h * w)  # rounding of the sides
    assert (area >= scale[0] - slack).all() and (area <= scale[1] + slack).all()
    aspect = cw / ch
    assert (aspect >= ratio[0] * (1 - 2 / ch.min())).all()
    assert (aspect <= ratio[1] * (1 + 2 / ch.min())).all()
    span = scale[1] - scale[0]
    assert area.min() < scale[0] + 0.1 * span and area.max() > scale[1] - 0.2 * span


def test_crop_window_fallback_is_torchvision_centre_crop():
  # A 10:1 strip never fits 3/4..4/3 at area >= 0.5: centre crop with the ratio clamped.
  box = augment_ops.crop_window([20, 200], tf.constant([1, 2], tf.int64), (0.5, 1.0),
                                (3 / 4, 4 / 3))
  assert [int(v) for v in box] == [0, 86, 20, 27]  # w = round(20 * 4/3), left = (200 - 27) // 2


@pytest.mark.parametrize('name,params,views', [
    ('simclr', dict(image_size=48), {'view_0': (0.08, 1.0)}),
    ('mae', dict(image_size=48), {'view_0': (0.2, 1.0)}),
    ('simmim', dict(image_size=48, mask_patch_size=16, model_patch_size=8),
     {'view_0': (0.67, 1.0)}),
    ('multicrop', dict(global_size=48, local_size=24, n_local=1),
     {'view_0': (0.4, 1.0), 'view_2': (0.05, 0.4)}),
])
def test_crop_area_end_to_end(name, params, views):
  """A coordinate-coded image (R = x, G = y): the views' coordinate ranges give the crop area."""
  size = 256
  y, x = np.mgrid[0:size, 0:size]
  coords = np.stack([x, y, np.zeros_like(x)], -1).astype(np.uint8)
  recipe = augment.make_recipe(name, on_device=True, interpolation='bilinear', **params)
  n = 120
  out = _run(recipe, [coords] * n, _seeds(n))
  for key, (lo, hi) in views.items():
    assert out[key].dtype == np.uint8, key  # geometry only: rounded to uint8 on the host
    v = out[key].astype(np.float64)
    out_size = v.shape[1]
    width = np.ptp(v[..., 0], axis=(1, 2)) * out_size / (out_size - 1) + 1
    height = np.ptp(v[..., 1], axis=(1, 2)) * out_size / (out_size - 1) + 1
    area = width * height / size**2
    assert area.min() >= lo * 0.9 - 0.005 and area.max() <= hi * 1.02 + 0.005, key
    assert area.min() < lo + 0.25 * (hi - lo) and area.max() > hi - 0.25 * (hi - lo), key
    flipped = v[:, 0, 0, 0] > v[:, 0, -1, 0]
    assert 0.3 < flipped.mean() < 0.7, key


def test_eval_is_resize_and_centre_crop():
  image = np.random.RandomState(0).randint(0, 256, (256, 320, 3)).astype(np.uint8)
  view = augment.make_recipe('eval')(image, tf.constant([1, 2], tf.int64))['view_0'].numpy()
  np.testing.assert_allclose(view, image[16:240, 48:272] / 255, atol=1e-6)
  small = augment.make_recipe('eval', image_size=32)(image[:40, :48], [0, 0])['view_0']
  assert small.shape == (32, 32, 3)
  assert augment_ops.eval_resize_size(224, 0.875) == 256
  assert augment_ops.eval_resize_size(32, 0.875) == 32


def _constant(value, h=40, w=40):
  return np.full((h, w, 3), value, np.uint8)


def test_on_device_recipe_makes_geometry_only():
  recipe = augment.make_recipe('byol_cifar', on_device=True)
  assert recipe.photometric_on_device
  out = _run(recipe, [_constant(77)] * 8, _seeds(8))
  assert out['view_1'].dtype == np.uint8
  np.testing.assert_array_equal(out['view_1'], 77)
  host = _run(augment.make_recipe('byol_cifar'), [_constant(77)] * 8, _seeds(8))
  assert np.abs(host['view_1'] - 77 / 255).max() > 0.05


def _is_gray(v):
  return np.abs(v - v[..., :1]).max(axis=(1, 2, 3)) < 1e-6


def test_byol_asymmetric_solarize():
  """view_0 never solarized, view_1 with p = 0.2 (only solarize left on, constant 230 image)."""
  recipe = augment.make_recipe('byol_cifar', jitter_p=0.0, gray_p=0.0)
  n = 400
  out = _run(recipe, [_constant(230)] * n, _seeds(n))
  solar = {k: (np.abs(out[k] - (1 - 230 / 255)) < 1e-5).all(axis=(1, 2, 3)) for k in out}
  assert solar['view_0'].sum() == 0
  tol = 4 * math.sqrt(0.2 * 0.8 / n)
  assert abs(solar['view_1'].mean() - 0.2) < tol


def test_gray_probability_in_full_recipe():
  n = 300
  out = _run(augment.make_recipe('byol_cifar'), [_smooth_image(40, 40)] * n, _seeds(n))
  tol = 4 * math.sqrt(0.2 * 0.8 / n)
  for key in out:
    assert abs(_is_gray(out[key]).mean() - 0.2) < tol, key


def test_weak_view_is_crop_and_flip_only():
  """photometric=(True, False): view_1 is the crop and flip of the same seed with every colour op
  off (MSF's weak view), view_0 the full recipe's; on the host and on the device."""
  images, seeds = [_smooth_image(40, 40, seed=i) for i in range(16)], _seeds(16)
  weak = augment.make_recipe('byol_cifar', photometric=(True, False))
  assert weak.views[1].photometric.is_identity and not weak.views[0].photometric.is_identity
  out = _run(weak, images, seeds)
  full = _run(augment.make_recipe('byol_cifar'), images, seeds)
  plain = _run(augment.make_recipe('byol_cifar', jitter_p=0.0, gray_p=0.0, solarize_p=(0, 0)),
               images, seeds)
  np.testing.assert_array_equal(out['view_0'], full['view_0'])
  np.testing.assert_array_equal(out['view_1'], plain['view_1'])
  assert not np.allclose(out['view_1'], full['view_1'], atol=0.02)  # the full view is coloured
  device = augment_jax.photometric_fn('byol_cifar', dict(photometric=(True, False)))
  geometry = {k: jax.numpy.asarray(v) for k, v in plain.items()}
  moved = device(geometry, jax.random.key(0))
  np.testing.assert_array_equal(np.asarray(moved['view_1']), plain['view_1'])
  assert not np.allclose(np.asarray(moved['view_0']), plain['view_0'], atol=0.02)
  with pytest.raises(ValueError, match="'photometric'.*one entry per view"):
    augment.make_recipe('simclr_cifar', photometric=(True,))
  with pytest.raises(ValueError, match="'photometric'"):
    augment.make_recipe('simclr_cifar', photometric=(0.5, 1.0))


def _natural_images(n=4):
  """The first CIFAR-10 test image of n classes (read from the archive, in memory); the test
  is skipped, saying why, when the archive is absent."""
  path = os.path.abspath(CIFAR_TEST)
  if not os.path.exists(path):
    pytest.skip(f'needs CIFAR-10 at {path} (set JSSL_CIFAR10_DIR to the folder holding '
                'test.tar.gz)')
  found = {}
  with tarfile.open(path) as tar:
    for member in tar:
      cls = os.path.basename(os.path.dirname(member.name))
      if member.isfile() and member.name.endswith('.jpg') and cls not in found:
        found[cls] = tf.io.decode_jpeg(tar.extractfile(member).read(), channels=3).numpy()
        if len(found) == n:
          break
  return list(found.values())


def _stats(views):
  """Per output image: channel means (3), channel stds (3), saturation, and is-gray."""
  mean = views.mean(axis=(1, 2))
  std = views.std(axis=(1, 2))
  sat = (views.max(-1) - views.min(-1)).mean(axis=(1, 2))
  return np.concatenate([mean, std, sat[:, None], _is_gray(views)[:, None]], axis=1)


@pytest.mark.parametrize('name', ['byol', pytest.param('simclr_cifar', marks=pytest.mark.slow)])
def test_host_and_device_photometric_agree_in_distribution(name):
  """Same geometry; photometric on the host (TF) or on the device (JAX): same statistics."""
  params = dict(image_size=32) if name == 'byol' else {}
  images = _natural_images(4)
  per_image = 80
  batch = [im for im in images for _ in range(per_image)]
  seeds = _seeds(len(batch), base=3)
  host = _run(augment.make_recipe(name, **params), batch, seeds)
  geometry = _run(augment.make_recipe(name, on_device=True, **params), batch, seeds)
  device = augment_jax.photometric_fn(name, params)(geometry, jax.random.key(0))
  for key in host:
    a, b = _stats(host[key]), _stats(np.asarray(device[key]))
    # Means of the statistics: within 0.03 (about 4 standard errors at n = 320).
    np.testing.assert_allclose(a.mean(0), b.mean(0), atol=0.03, err_msg=f'{name} {key}')
    # Distributions of brightness, contrast and saturation: two-sample KS, generous level.
    for col in (0, 4, 6):
      assert scipy.stats.ks_2samp(a[:, col], b[:, col]).pvalue > 1e-3, (name, key, col)


def test_device_half_scales_uint8_views_as_their_float_values():
  """The host's uint8 geometry and the same pixels as float32 / 255 give the same views."""
  recipe = augment.make_recipe('multicrop', global_size=32, local_size=16, n_local=2,
                               on_device=True)
  geometry = _run(recipe, [_smooth_image(seed=i) for i in range(8)], _seeds(8))
  assert all(geometry[k].dtype == np.uint8 for k in geometry)
  fn = augment_jax.photometric_fn('multicrop', dict(global_size=32, local_size=16, n_local=2))
  from_u8 = fn(geometry, jax.random.key(1))
  from_float = fn({k: v.astype(np.float32) / 255 for k, v in geometry.items()},
                  jax.random.key(1))
  for k in geometry:
    assert from_u8[k].dtype == np.float32, k
    np.testing.assert_allclose(np.asarray(from_u8[k]), np.asarray(from_float[k]), atol=1e-6)
  # Identity photometric settings (MAE's recipe) still hand the model float32 in [0, 1].
  mae = augment_jax.photometric_fn('mae', dict(image_size=32))
  out = mae({'view_0': np.full((2, 32, 32, 3), 255, np.uint8)}, jax.random.key(0))
  assert out['view_0'].dtype == np.float32 and float(np.max(out['view_0'])) == 1.0


def test_device_ops_match_host_ops():
  """The JAX ops are the TF ops: same numbers for the same factors."""
  x = np.random.RandomState(0).rand(20, 24, 3).astype(np.float32)
  # Op j runs at the rank of order[j]: contrast, hue, saturation, brightness.
  order = np.array([0.9, 0.1, 0.5, 0.3], np.float32)
  factors = np.array([1.2, 0.7, 1.5, 0.1], np.float32)

  def ops(m):
    return [m.adjust_brightness(x, 1.3), m.adjust_contrast(x, 0.6), m.adjust_saturation(x, 1.7),
            m.adjust_hue(x, -0.3), m.gaussian_blur(x, 1.5, 7), m.grayscale(x), m.solarize(x),
            m.color_jitter(x, order, factors)]

  for got, want in zip(jax.jit(lambda: ops(augment_jax))(), ops(augment_ops)):
    np.testing.assert_allclose(np.asarray(got), want.numpy(), atol=2e-6)
  gray = augment_ops.grayscale(x).numpy()
  np.testing.assert_allclose(gray[..., 0], x @ np.array([0.299, 0.587, 0.114]), atol=1e-6)
  expect = augment_ops.adjust_contrast(x, 0.7)
  expect = augment_ops.adjust_hue(expect, 0.1)
  expect = augment_ops.adjust_saturation(expect, 1.5)
  expect = augment_ops.adjust_brightness(expect, 1.2)
  np.testing.assert_allclose(augment_ops.color_jitter(x, order, factors).numpy(), expect,
                             atol=1e-6)


def test_blur_is_gaussian_with_reflect_padding():
  x = np.zeros((9, 9, 3), np.float32)
  x[4, 1] = 1.0  # next to the left edge: reflect padding ('cb|abc') mirrors it to column -1
  y = augment_ops.gaussian_blur(x, 1.0, 5).numpy()
  taps = np.exp(-0.5 * np.arange(-2, 3) ** 2)
  taps /= taps.sum()
  # Column 0 reads column 1 twice (as itself and as the mirror of -1), column 1 reads it as
  # itself and as the mirror of column -1 (two to its left).
  row = np.array([2 * taps[3], taps[2] + taps[0], taps[3], taps[4], 0])
  np.testing.assert_allclose(y[4, :5, 0], row * taps[2], atol=1e-6)
  np.testing.assert_allclose(y[2:7, 1, 0], taps * row[1], atol=1e-6)  # vertical profile


def test_photometric_fn_passes_mask_and_is_deterministic():
  fn = augment_jax.photometric_fn('beit', dict(image_size=32, patch_size=8,
                                              num_masking_patches=6))
  views = {'view_0': np.full((2, 32, 32, 3), 0.4, np.float32),
           'mask': np.ones((2, 4, 4), np.int32)}
  a, b = fn(views, jax.random.key(1)), fn(views, jax.random.key(1))
  np.testing.assert_array_equal(np.asarray(a['mask']), views['mask'])
  np.testing.assert_array_equal(np.asarray(a['view_0']), np.asarray(b['view_0']))
  assert a['view_0'].shape == (2, 32, 32, 3)


def test_show_renders_a_grid(tmp_path):
  recipe = augment.make_recipe('simmim', image_size=32, mask_patch_size=8, model_patch_size=4)
  grid = show.render_views([show.synthetic_image(48, i) for i in range(2)], recipe, seed=0)
  assert grid.dtype == np.uint8 and grid.shape == (64, 3 * 32, 3)
  out = tmp_path / 'views.png'
  assert show.main(['--recipe', 'byol_cifar', '--n', '2', '--out', str(out),
                    '--param', 'on_device=True']) == 0
  assert out.stat().st_size > 0


def test_photometric_fn_keeps_batch_sharding():
  """On a batch sharded across devices the device half needs no communication."""
  from jax.sharding import Mesh, NamedSharding, PartitionSpec  # pylint: disable=g-import-not-at-top
  mesh = Mesh(np.array(jax.devices()), ('data',))
  sharding = NamedSharding(mesh, PartitionSpec('data'))
  n = 2 * len(jax.devices())
  views = {k: jax.device_put(np.full((n, 16, 16, 3), 0.5, np.float32), sharding)
           for k in ('view_0', 'view_1')}
  fn = augment_jax.photometric_fn('byol_cifar', dict(image_size=16, gray_p=0.0))
  assert fn is augment_jax.photometric_fn('byol_cifar', dict(gray_p=0, image_size=16))
  hlo = fn.lower(views, jax.random.key(0)).compile().as_text()
  for collective in ('all-gather', 'all-reduce', 'all-to-all', 'collective-permute'):
    assert collective not in hlo
  out = fn(views, jax.random.key(0))
  assert out['view_1'].sharding.is_equivalent_to(sharding, 4)
