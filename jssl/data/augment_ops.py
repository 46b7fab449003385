"""TensorFlow image ops for the host recipes, each a pure function of (image, stateless seed).

Geometry: torchvision's RandomResizedCrop (area uniform in `scale`, log-uniform aspect ratio, ten
tries, then a centre crop), flip, the eval resize + centre crop. Resizing is antialiased
(PIL-like) in float32, the result clipped to [0, 1].
Colour, on float32 [0, 1] images, with torchvision's semantics, each clipped to [0, 1]:
brightness `x * f`; contrast `f x + (1 - f) mean(gray(x))`; saturation `f x + (1 - f) gray(x)`;
hue: shift of H in HSV by `d` turns; grayscale `0.299 R + 0.587 G + 0.114 B` on 3 channels;
Gaussian blur with reflect padding; solarize `x < 0.5 ? x : 1 - x`.
`augment_jax` has the same ops in JAX.
"""

import math
from typing import Sequence, Tuple

import tensorflow as tf

from jssl.data import augment_recipes

GRAY_WEIGHTS = (0.299, 0.587, 0.114)
CROP_ATTEMPTS = 10


def _split(seed, n):
  return tf.unstack(tf.random.experimental.stateless_split(seed, n))


def _uniform(seed, shape=(), minval=0.0, maxval=1.0):
  return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=tf.float32)


def _clip(x):
  return tf.clip_by_value(x, 0.0, 1.0)


def crop_window(image_hw: tf.Tensor, seed: tf.Tensor, scale: Sequence[float],
                ratio: Sequence[float]) -> Tuple[tf.Tensor, ...]:
  """torchvision's `RandomResizedCrop.get_params`: int32 (top, left, height, width)."""
  h = tf.cast(image_hw[0], tf.float32)
  w = tf.cast(image_hw[1], tf.float32)
  s_area, s_ratio, s_top, s_left = _split(seed, 4)
  target = h * w * _uniform(s_area, [CROP_ATTEMPTS], scale[0], scale[1])
  aspect = tf.exp(_uniform(s_ratio, [CROP_ATTEMPTS], math.log(ratio[0]), math.log(ratio[1])))
  cw = tf.round(tf.sqrt(target * aspect))
  ch = tf.round(tf.sqrt(target / aspect))
  ok = (cw > 0) & (ch > 0) & (cw <= w) & (ch <= h)
  first = tf.argmax(tf.cast(ok, tf.int32))
  found = tf.reduce_any(ok)
  # Fallback: the whole image, its aspect ratio clamped into `ratio`, centred.
  in_ratio = w / h
  fw = tf.where(in_ratio > ratio[1], tf.round(h * ratio[1]), w)
  fh = tf.where(in_ratio < ratio[0], tf.round(w / ratio[0]), h)
  ch = tf.where(found, ch[first], fh)
  cw = tf.where(found, cw[first], fw)
  top = tf.where(found, tf.floor(_uniform(s_top) * (h - ch + 1)), tf.floor((h - ch) / 2))
  left = tf.where(found, tf.floor(_uniform(s_left) * (w - cw + 1)), tf.floor((w - cw) / 2))
  return tuple(tf.cast(v, tf.int32) for v in (top, left, ch, cw))


def resize(image: tf.Tensor, hw, interpolation: str) -> tf.Tensor:
  """uint8 or float [h, w, 3] -> float32 [hw, 3] in [0, 1], antialiased."""
  x = tf.cast(image, tf.float32) / 255.0 if image.dtype == tf.uint8 else image
  x = tf.image.resize(x, hw, method=interpolation, antialias=True)
  return _clip(x)


def random_resized_crop(image: tf.Tensor, seed: tf.Tensor, size: int, scale: Sequence[float],
                        ratio: Sequence[float], interpolation: str) -> tf.Tensor:
  """A torchvision RandomResizedCrop of a uint8 image: float32 [size, size, 3] in [0, 1]."""
  top, left, ch, cw = crop_window(tf.shape(image)[:2], seed, scale, ratio)
  crop = tf.slice(image, tf.stack([top, left, 0]), tf.stack([ch, cw, -1]))
  return resize(crop, [size, size], interpolation)


def eval_resize_size(size: int, crop_pct: float) -> int:
  """Shorter side before the centre crop: `int(size / crop_pct)` from 224 px up, else `size`."""
  return int(size / crop_pct) if size >= 224 else size


def center_crop(image: tf.Tensor, size: int, crop_pct: float, interpolation: str) -> tf.Tensor:
  """Eval view: resize the shorter side to `eval_resize_size`, centre crop `size` (torchvision
  `Resize(int)` + `CenterCrop`): float32 [size, size, 3] in [0, 1]."""
  short = eval_resize_size(size, crop_pct)
  hw = tf.shape(image)[:2]
  h, w = hw[0], hw[1]
  long = short * tf.maximum(h, w) // tf.minimum(h, w)  # torchvision: int(short * long / short)
  new_h = tf.where(h <= w, short, long)
  new_w = tf.where(h <= w, long, short)
  x = tf.cast(image, tf.float32) / 255.0
  x = tf.cond((new_h == h) & (new_w == w), lambda: x,
              lambda: resize(x, tf.stack([new_h, new_w]), interpolation))
  top = tf.cast(tf.round(tf.cast(new_h - size, tf.float32) / 2), tf.int32)
  left = tf.cast(tf.round(tf.cast(new_w - size, tf.float32) / 2), tf.int32)
  return tf.slice(x, tf.stack([top, left, 0]), [size, size, 3])


def random_flip(x: tf.Tensor, seed: tf.Tensor, p: float) -> tf.Tensor:
  """Horizontal flip with probability p."""
  if p <= 0:
    return x
  return tf.cond(_uniform(seed) < p, lambda: x[:, ::-1], lambda: x)


def grayscale(x: tf.Tensor) -> tf.Tensor:
  """0.299 R + 0.587 G + 0.114 B, replicated on 3 channels."""
  gray = tf.reduce_sum(x * tf.constant(GRAY_WEIGHTS, tf.float32), axis=-1, keepdims=True)
  return tf.broadcast_to(gray, tf.shape(x))


def adjust_brightness(x, factor):
  return _clip(x * factor)


def adjust_contrast(x, factor):
  mean = tf.reduce_mean(grayscale(x)[..., 0])
  return _clip(factor * x + (1 - factor) * mean)


def adjust_saturation(x, factor):
  return _clip(factor * x + (1 - factor) * grayscale(x))


def adjust_hue(x, delta):
  return _clip(tf.image.adjust_hue(x, delta))


def solarize(x, threshold=0.5):
  return tf.where(x < threshold, x, 1.0 - x)


def gaussian_blur(x: tf.Tensor, sigma, kernel: int) -> tf.Tensor:
  """Separable Gaussian blur of [h, w, 3] (static h, w), odd `kernel` taps, reflect padding
  (torchvision's), as two matrix products (15x faster on CPU than a depthwise convolution)."""
  y = tf.einsum('ij,jwc->iwc', _blur_matrix(x.shape[0], sigma, kernel), x)
  return _clip(tf.einsum('wj,hjc->hwc', _blur_matrix(x.shape[1], sigma, kernel), y))


def _blur_matrix(n, sigma, kernel):
  """[n, n]: row i holds the normalised taps at the reflect-padded neighbours of i."""
  gauss = lambda d: tf.exp(-0.5 * tf.square(d / sigma))
  taps = gauss(tf.range(-(kernel // 2), kernel // 2 + 1, dtype=tf.float32))
  return tf.reduce_sum(gauss(augment_recipes.blur_offsets(n, kernel)), 0) / tf.reduce_sum(taps)


def color_jitter(x: tf.Tensor, order_noise: tf.Tensor, factors: tf.Tensor,
                 active: Sequence[bool] = (True,) * 4) -> tf.Tensor:
  """torchvision's ColorJitter with drawn factors: brightness, contrast, saturation, hue
  (`factors[0..3]`) applied in the order `argsort(order_noise)`; inactive ones are skipped."""
  adjust = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
  fns = [(lambda y, j=j: adjust[j](y, factors[j])) if on else (lambda y: y)
         for j, on in enumerate(active)]
  order = tf.argsort(order_noise)
  step = lambda k, y: (k + 1, tf.switch_case(order[k], [lambda f=f: f(y) for f in fns]))
  return tf.while_loop(lambda k, y: k < 4, step, (tf.constant(0), x))[1]


def _maybe(apply, fn, x):
  """fn(x) if `apply` (a Python bool or a scalar bool tensor)."""
  if isinstance(apply, bool):
    return fn(x) if apply else x
  return tf.cond(apply, lambda: fn(x), lambda: x)


def _chance(u, p):
  """`u < p` (u uniform in [0, 1)), as a Python bool where p makes it certain."""
  return True if p >= 1 else False if p <= 0 else u < p


def photometric(x: tf.Tensor, seed: tf.Tensor, spec: augment_recipes.Photometric) -> tf.Tensor:
  """A view's photometric ops in order: jitter (p), grayscale (p), blur (p), solarize (p).

  All randomness is one stateless draw of `PHOTOMETRIC_DRAWS` uniforms (layout there).
  """
  u = _uniform(seed, [augment_recipes.PHOTOMETRIC_DRAWS])
  if spec.has_jitter:
    lo, hi = (tf.constant(v, tf.float32) for v in zip(*spec.jitter_ranges()))
    factors = lo + (hi - lo) * u[5:9]
    active = [s > 0 for s in (spec.brightness, spec.contrast, spec.saturation, spec.hue)]
    x = _maybe(_chance(u[0], spec.jitter_p),
               lambda y: color_jitter(y, u[1:5], factors, active), x)
  x = _maybe(_chance(u[9], spec.gray_p), grayscale, x)
  lo, hi = spec.blur_sigma
  sigma = lo + (hi - lo) * u[11]
  x = _maybe(_chance(u[10], spec.blur_p), lambda y: gaussian_blur(y, sigma, spec.blur_kernel), x)
  return _maybe(_chance(u[12], spec.solarize_p), solarize, x)
