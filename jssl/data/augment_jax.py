"""The photometric half of the view recipes on the device, in JAX (jit + vmap; no TensorFlow).

With a recipe's `on_device=True` the host makes only the geometry (crop, resize, flip) and
`photometric_fn(name, params)(views, rng)` applies the rest of the same recipe to a batch:
colour jitter in random order (p), grayscale (p), Gaussian blur with a random sigma (p),
solarize (p), per view as `augment_recipes.plan` says. The ops have the semantics of the
TensorFlow host path (`augment_ops`: torchvision's); dm-pix provides hue and solarize.
The random draws differ from the host path's (JAX keys, not TF seeds): same distribution, not
the same pixels.

`crop_and_flip(rng, images_u8, size, scale, ratio, flip_p)` is the geometric half on the
device, for images already in device memory (fine-tuning's labelled set): a random resized crop
and a horizontal flip per example.
"""

import functools
import math
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import dm_pix
import jax
import jax.numpy as jnp

from jssl.data import augment_recipes

GRAY_WEIGHTS = (0.299, 0.587, 0.114)

Views = Dict[str, jax.Array]


def grayscale(x: jax.Array) -> jax.Array:
  """0.299 R + 0.587 G + 0.114 B, replicated on 3 channels."""
  gray = jnp.tensordot(x, jnp.asarray(GRAY_WEIGHTS, x.dtype), axes=((-1,), (0,)))
  return jnp.broadcast_to(gray[..., None], x.shape)


def adjust_brightness(x, factor):
  return jnp.clip(x * factor, 0.0, 1.0)


def adjust_contrast(x, factor):
  mean = jnp.mean(grayscale(x)[..., 0])
  return jnp.clip(factor * x + (1 - factor) * mean, 0.0, 1.0)


def adjust_saturation(x, factor):
  return jnp.clip(factor * x + (1 - factor) * grayscale(x), 0.0, 1.0)


def adjust_hue(x, delta):
  return jnp.clip(dm_pix.adjust_hue(x, delta), 0.0, 1.0)


def solarize(x, threshold=0.5):
  return dm_pix.solarize(x, threshold)


def gaussian_blur(x: jax.Array, sigma, kernel: int) -> jax.Array:
  """Separable Gaussian blur of [h, w, 3], odd `kernel` taps, reflect padding (torchvision's),
  as two matrix products (accelerator-friendly, and the host path's exact formula)."""
  hp = jax.lax.Precision.HIGHEST
  y = jnp.einsum('ij,jwc->iwc', _blur_matrix(x.shape[0], sigma, kernel), x, precision=hp)
  y = jnp.einsum('wj,hjc->hwc', _blur_matrix(x.shape[1], sigma, kernel), y, precision=hp)
  return jnp.clip(y, 0.0, 1.0)


def _blur_matrix(n, sigma, kernel):
  """[n, n]: row i holds the normalised taps at the reflect-padded neighbours of i."""
  gauss = lambda d: jnp.exp(-0.5 * jnp.square(d / sigma))
  taps = gauss(jnp.arange(-(kernel // 2), kernel // 2 + 1, dtype=jnp.float32))
  return jnp.sum(gauss(augment_recipes.blur_offsets(n, kernel)), 0) / jnp.sum(taps)


def color_jitter(x: jax.Array, order_noise: jax.Array, factors: jax.Array,
                 active: Sequence[bool] = (True,) * 4) -> jax.Array:
  """torchvision's ColorJitter with drawn factors: brightness, contrast, saturation, hue
  (`factors[0..3]`) applied in the order `argsort(order_noise)`; inactive ones are skipped."""
  adjust = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
  fns = [(lambda y, j=j: adjust[j](y, factors[j])) if on else (lambda y: y)
         for j, on in enumerate(active)]
  order = jnp.argsort(order_noise)
  step = lambda k, y: jax.lax.switch(order[k], fns, y)
  return jax.lax.fori_loop(0, 4, step, x)


def _maybe(apply, fn, x):
  """fn(x) if `apply` (a Python bool or a scalar bool array)."""
  if isinstance(apply, bool):
    return fn(x) if apply else x
  return jax.lax.cond(apply, fn, lambda y: y, x)


def _chance(u, p):
  """`u < p` (u uniform in [0, 1)), as a Python bool where p makes it certain."""
  return True if p >= 1 else False if p <= 0 else u < p


def photometric_one(x: jax.Array, u: jax.Array,
                    spec: augment_recipes.Photometric) -> jax.Array:
  """One image's photometric ops: jitter (p), grayscale (p), blur (p), solarize (p).

  `u`: `PHOTOMETRIC_DRAWS` uniforms in [0, 1), laid out as `augment_recipes` says.
  """
  if spec.has_jitter:
    lo, hi = (jnp.asarray(v, jnp.float32) for v in zip(*spec.jitter_ranges()))
    factors = lo + (hi - lo) * u[5:9]
    active = [s > 0 for s in (spec.brightness, spec.contrast, spec.saturation, spec.hue)]
    x = _maybe(_chance(u[0], spec.jitter_p),
               lambda y: color_jitter(y, u[1:5], factors, active), x)
  x = _maybe(_chance(u[9], spec.gray_p), grayscale, x)
  lo, hi = spec.blur_sigma
  sigma = lo + (hi - lo) * u[11]
  x = _maybe(_chance(u[10], spec.blur_p), lambda y: gaussian_blur(y, sigma, spec.blur_kernel), x)
  return _maybe(_chance(u[12], spec.solarize_p), solarize, x)


def to_unit(x: jax.Array) -> jax.Array:
  """float32 in [0, 1]: uint8 images divided by 255, float ones as float32."""
  x = jnp.asarray(x)
  return x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)


def photometric(views: Mapping[str, jax.Array], rng: jax.Array,
                params: Mapping[str, augment_recipes.Photometric]) -> Views:
  """Applies `params[name]` to each batch `views[name]` ([B, h, w, 3] float32 in [0, 1], or
  uint8 in [0, 255] as the host's geometry-only recipes make them: scaled to float32 first).

  Views without an entry in `params` (e.g. 'mask') pass through unchanged. View i of `params`
  draws its [B, PHOTOMETRIC_DRAWS] uniforms from `fold_in(rng, i)`. Views with the same
  settings and shape run as one batch (one compiled program instead of several).
  """
  out = {k: to_unit(v) if k in params else v for k, v in views.items()}
  groups = {}
  for i, (name, spec) in enumerate(params.items()):
    if not spec.is_identity:
      groups.setdefault((spec, views[name].shape), []).append((i, name))
  for (spec, shape), members in groups.items():
    # Stacked on a new leading axis (not concatenated on the batch axis), so a batch sharded
    # across devices stays where it is.
    x = jnp.stack([out[name] for _, name in members])
    u = jnp.stack([
        jax.random.uniform(jax.random.fold_in(rng, i),
                           (shape[0], augment_recipes.PHOTOMETRIC_DRAWS))
        for i, _ in members])
    y = jax.vmap(jax.vmap(functools.partial(photometric_one, spec=spec)))(x, u)
    for k, (_, name) in enumerate(members):
      out[name] = y[k]
  return out


def view_params(name: str, params: Optional[Mapping[str, Any]] = None
                ) -> Dict[str, augment_recipes.Photometric]:
  """Per-view photometric settings of recipe `name` with `params` overriding its defaults."""
  views, _ = augment_recipes.plan(name, params)
  return {v.name: v.photometric for v in views}


def photometric_fn(name: str, params: Optional[Mapping[str, Any]] = None
                   ) -> Callable[[Views, jax.Array], Views]:
  """Jitted `fn(views, rng) -> views`: the device half of recipe `name` (its `params` as given
  to `augment.make_recipe`; `on_device` is ignored here). Cached: equal arguments give the
  same function, compiled once per input shape."""
  resolved = augment_recipes.resolve(name, params)
  return _photometric_jit(name, tuple(sorted(resolved.items())))


@functools.lru_cache(maxsize=None)
def _photometric_jit(name, items):
  return jax.jit(functools.partial(photometric, params=view_params(name, dict(items))))


def random_resized_crop(rng, image, size: int, scale, ratio):
  """One float image `[H, W, 3]` -> `[size, size, 3]`: a box of area fraction ~U(scale) and
  log-uniform aspect ratio (clipped to the image), resized bilinearly with antialiasing."""
  h, w = image.shape[0], image.shape[1]
  k_area, k_ratio, k_top, k_left = jax.random.split(rng, 4)
  area = h * w * jax.random.uniform(k_area, (), minval=scale[0], maxval=scale[1])
  r = jnp.exp(jax.random.uniform(k_ratio, (), minval=math.log(ratio[0]),
                                 maxval=math.log(ratio[1])))
  bw = jnp.clip(jnp.sqrt(area * r), 1.0, w)
  bh = jnp.clip(jnp.sqrt(area / r), 1.0, h)
  top = jax.random.uniform(k_top, ()) * (h - bh)
  left = jax.random.uniform(k_left, ()) * (w - bw)
  s = jnp.stack([size / bh, size / bw])
  t = jnp.stack([-top * size / bh, -left * size / bw])
  return jax.image.scale_and_translate(image, (size, size, image.shape[2]), (0, 1), s, t,
                                       'linear', antialias=True)


def crop_and_flip(rng, images_u8, size: int, scale, ratio, flip_p: float):
  """uint8 `[N, H, W, 3]` -> float32 views in [0, 1] (random resized crop + flip), per example."""
  x = jnp.asarray(images_u8, jnp.float32) / 255.0
  n = x.shape[0]
  k_crop, k_flip = jax.random.split(rng)
  x = jax.vmap(lambda k, im: random_resized_crop(k, im, size, scale, ratio))(
      jax.random.split(k_crop, n), x)
  flip = jax.random.uniform(k_flip, (n, 1, 1, 1)) < flip_p
  return jnp.clip(jnp.where(flip, x[:, :, ::-1], x), 0.0, 1.0)
