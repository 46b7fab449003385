"""The SSL view recipes as data: their parameters, defaults and per-view plans.

Pure Python and numpy (no TensorFlow, no JAX), so that the host path (`augment`, TF) and the
device path (`augment_jax`, JAX) read the same recipe. A recipe's parameters are flat scalars and
tuples, so they fit in an ml_collections ConfigDict; `plan(name, params)` turns them into one
`ViewSpec` per view plus an optional `MaskSpec`.

Parameters (not every recipe has every one):
- geometry: `image_size` (or `global_size`/`local_size`) output side in px; `scale` (or
  `global_scale`/`local_scale`) crop area fraction range; `ratio` aspect (w/h) range, sampled
  log-uniformly; `interpolation` ('bicubic', antialiased); `flip_p` horizontal flip probability;
  multicrop `n_global`, `n_local`; eval `crop_pct`.
- colour: `jitter_p` probability of torchvision's ColorJitter with `brightness`, `contrast`,
  `saturation` (factors uniform in [max(0, 1 - s), 1 + s]) and `hue` (shift uniform in [-h, h]),
  in random order; `gray_p` grayscale probability.
- per view: `blur_p` (Gaussian blur, sigma uniform in `blur_sigma`, kernel 10% of the side) and
  `solarize_p`, one entry per view (multicrop: `global_*` per global view, `local_*` for all);
  two-view recipes: `photometric`, one bool per view, False leaving that view a crop and flip
  only (no jitter, greyscale, blur or solarize: MSF's weak view).
- masks: simmim `mask_patch_size`, `model_patch_size`, `mask_ratio`; beit `patch_size`,
  `num_masking_patches`, `min_num_patches`, `max_num_patches` (0 = no cap), `min_aspect`.
- `on_device`: the host makes only the geometry; `augment_jax.photometric_fn` does the rest.
"""

import dataclasses
from typing import Any, Mapping, Optional, Tuple

import numpy as np

RATIO = (3 / 4, 4 / 3)

_CROP = dict(scale=(0.08, 1.0), ratio=RATIO, interpolation='bicubic', flip_p=0.5)
_JITTER = dict(jitter_p=0.8, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1, gray_p=0.2)
_BLUR = dict(blur_sigma=(0.1, 2.0))
_TWO_VIEWS = dict(photometric=(True, True), on_device=False)

_DEFAULTS = {
    # SimCLR (Chen et al., 2020), ImageNet: jitter strength s = 1 (0.8s, 0.8s, 0.8s, 0.2s).
    'simclr': dict(image_size=224, **_CROP, **_JITTER, **_BLUR, **_TWO_VIEWS) | dict(
        brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2,
        blur_p=(0.5, 0.5), solarize_p=(0.0, 0.0)),
    # SimCLR's CIFAR variant: 32 px, no blur. (SimCLR blurs only at ImageNet sizes: with
    # 'simclr' below 96 px, set blur_p=(0.0, 0.0) or use this recipe.)
    'simclr_cifar': dict(image_size=32, **_CROP, **_JITTER, **_BLUR, **_TWO_VIEWS) | dict(
        brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2,
        blur_p=(0.0, 0.0), solarize_p=(0.0, 0.0)),
    # BYOL (Grill et al., 2020): the asymmetric pair.
    'byol': dict(image_size=224, **_CROP, **_JITTER, **_BLUR, **_TWO_VIEWS) | dict(
        blur_p=(1.0, 0.1), solarize_p=(0.0, 0.2)),
    'byol_cifar': dict(image_size=32, **_CROP, **_JITTER, **_BLUR, **_TWO_VIEWS) | dict(
        blur_p=(0.0, 0.0), solarize_p=(0.0, 0.2)),
    # DINO's multi-crop (Caron et al., 2021); SwAV: global_scale (0.14, 1), local (0.05, 0.14).
    'multicrop': dict(
        n_global=2, global_size=224, global_scale=(0.4, 1.0),
        n_local=6, local_size=96, local_scale=(0.05, 0.4),
        ratio=RATIO, interpolation='bicubic', flip_p=0.5, **_JITTER, **_BLUR,
        global_blur_p=(1.0, 0.1), global_solarize_p=(0.0, 0.2),
        local_blur_p=0.5, local_solarize_p=0.0, on_device=False),
    # MAE (He et al., 2022): crop and flip only; the mask is made on the device (masks.py).
    'mae': dict(image_size=224, **_CROP, on_device=False) | dict(scale=(0.2, 1.0)),
    # SimMIM (Xie et al., 2022): crop (0.67, 1), flip, random mask on a coarse grid.
    'simmim': dict(image_size=224, **_CROP, on_device=False) | dict(
        scale=(0.67, 1.0), mask_patch_size=32, model_patch_size=16, mask_ratio=0.6),
    # BEiT (Bao et al., 2022): ColorJitter(0.4, 0.4, 0.4), crop, flip, block-wise mask.
    'beit': dict(image_size=224, **_CROP, on_device=False) | dict(
        jitter_p=1.0, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.0,
        patch_size=16, num_masking_patches=75, min_num_patches=16, max_num_patches=0,
        min_aspect=0.3),
    # Evaluation: resize the shorter side, centre crop; no randomness.
    'eval': dict(image_size=224, crop_pct=0.875, interpolation='bicubic', on_device=False),
}

INTERPOLATIONS = ('bilinear', 'bicubic', 'area', 'lanczos3', 'nearest')


# Uniform draws in [0, 1) one view's photometric ops take, in this order: jitter applied?,
# jitter order (4), brightness, contrast, saturation and hue factors (4), grayscale?, blur?,
# blur sigma, solarize?. One draw of this many per example, on the host and on the device.
PHOTOMETRIC_DRAWS = 13


@dataclasses.dataclass(frozen=True)
class Photometric:
  """The photometric ops of one view, in order: jitter, grayscale, blur, solarize."""
  jitter_p: float = 0.0
  brightness: float = 0.0
  contrast: float = 0.0
  saturation: float = 0.0
  hue: float = 0.0
  gray_p: float = 0.0
  blur_p: float = 0.0
  blur_sigma: Tuple[float, float] = (0.1, 2.0)
  blur_kernel: int = 1
  solarize_p: float = 0.0

  @property
  def has_jitter(self) -> bool:
    return self.jitter_p > 0 and max(self.brightness, self.contrast, self.saturation,
                                     self.hue) > 0

  def jitter_ranges(self) -> Tuple[Tuple[float, float], ...]:
    """(low, high) of torchvision's brightness, contrast, saturation, hue factors."""
    ranges = [(max(0.0, 1.0 - s), 1.0 + s) for s in (self.brightness, self.contrast,
                                                      self.saturation)]
    return tuple(ranges) + ((-self.hue, self.hue),)

  @property
  def is_identity(self) -> bool:
    return not (self.has_jitter or self.gray_p > 0 or self.blur_p > 0 or self.solarize_p > 0)


@dataclasses.dataclass(frozen=True)
class ViewSpec:
  """One view: a random resized crop (or, with `scale=None`, the eval resize + centre crop)."""
  name: str
  size: int
  scale: Optional[Tuple[float, float]]
  ratio: Tuple[float, float]
  flip_p: float
  interpolation: str
  photometric: Photometric
  crop_pct: float = 1.0


@dataclasses.dataclass(frozen=True)
class MaskSpec:
  """A host-made mask: `kind` is 'simmim' or 'beit'; `grid` its [rows, cols]; `args` its knobs."""
  kind: str
  grid: Tuple[int, int]
  args: Tuple[Tuple[str, Any], ...]


def names() -> Tuple[str, ...]:
  return tuple(_DEFAULTS)


def recipe_defaults(name: str) -> dict:
  """All parameters of recipe `name` with their defaults (plain scalars and tuples)."""
  if name not in _DEFAULTS:
    raise ValueError(f'unknown recipe {name!r}; valid recipes: {", ".join(_DEFAULTS)}')
  return dict(_DEFAULTS[name])


def resolve(name: str, params: Optional[Mapping[str, Any]] = None) -> dict:
  """Defaults of `name` updated by `params`, type-normalised and checked (ValueError)."""
  out = recipe_defaults(name)
  for key, value in dict(params or {}).items():
    if key not in out:
      raise ValueError(f'unknown parameter {key!r} for recipe {name!r}; valid parameters: '
                       f'{", ".join(sorted(out))}')
    out[key] = _like(out[key], value, key)
  _check(name, out)
  return out


def blur_kernel(size: int) -> int:
  """SimCLR's blur kernel, 10% of the image side, made odd: 23 at 224, 9 at 96, 3 at 32."""
  return 2 * (size // 20) + 1


def blur_offsets(n: int, kernel: int) -> np.ndarray:
  """float32 [3, n, n]: the tap offset through which input j reaches output i of a `kernel`-tap
  blur with reflect padding ('dcb|abcd|cba'), directly, via the left mirror, via the right
  mirror; inf where there is no such path. The [n, n] blur matrix is then
  `sum_k g(offsets[k]) / sum_t g(t)` with `g(d) = exp(-d^2 / (2 sigma^2))` (g(inf) = 0)."""
  r = kernel // 2
  if r > n - 1:
    raise ValueError(f'blur kernel {kernel} too large for a {n} px image')
  i, j = np.mgrid[0:n, 0:n]
  direct = np.where(np.abs(j - i) <= r, j - i, np.inf)
  left = np.where((j >= 1) & (i + j <= r), i + j, np.inf)  # input j mirrors tap -(i + j)
  far = 2 * (n - 1) - i - j
  right = np.where((j <= n - 2) & (far <= r), far, np.inf)
  return np.stack([direct, left, right]).astype(np.float32)


def plan(name: str, params: Optional[Mapping[str, Any]] = None):
  """`(views, mask)`: a tuple of `ViewSpec` (global crops first) and a `MaskSpec` or None."""
  p = resolve(name, params)
  if name == 'eval':
    view = ViewSpec('view_0', p['image_size'], None, RATIO, 0.0, p['interpolation'],
                    Photometric(), crop_pct=p['crop_pct'])
    return (view,), None
  if name == 'multicrop':
    return _multicrop(p), None
  size = p['image_size']
  crop = dict(size=size, scale=p['scale'], ratio=p['ratio'], flip_p=p['flip_p'],
              interpolation=p['interpolation'])
  if name in ('mae', 'simmim', 'beit'):
    photo = Photometric()
    if name == 'beit':
      photo = Photometric(**{k: p[k] for k in ('jitter_p', 'brightness', 'contrast',
                                                'saturation', 'hue')})
    mask = None if name == 'mae' else _mask_spec(name, p)
    return (ViewSpec('view_0', photometric=photo, **crop),), mask
  views = tuple(
      ViewSpec(f'view_{i}', photometric=_photometric(p, size, blur, sol) if on else Photometric(),
               **crop)
      for i, (blur, sol, on) in enumerate(zip(p['blur_p'], p['solarize_p'], p['photometric'])))
  return views, None


def _multicrop(p):
  views = []
  for i in range(p['n_global']):
    photo = _photometric(p, p['global_size'], p['global_blur_p'][i], p['global_solarize_p'][i])
    views.append(ViewSpec(f'view_{i}', p['global_size'], p['global_scale'], p['ratio'],
                          p['flip_p'], p['interpolation'], photo))
  for i in range(p['n_local']):
    photo = _photometric(p, p['local_size'], p['local_blur_p'], p['local_solarize_p'])
    views.append(ViewSpec(f'view_{p["n_global"] + i}', p['local_size'], p['local_scale'],
                          p['ratio'], p['flip_p'], p['interpolation'], photo))
  return tuple(views)


def _photometric(p, size, blur_p, solarize_p):
  keys = ('jitter_p', 'brightness', 'contrast', 'saturation', 'hue', 'gray_p', 'blur_sigma')
  return Photometric(**{k: p[k] for k in keys}, blur_p=blur_p, solarize_p=solarize_p,
                     blur_kernel=blur_kernel(size))


def _mask_spec(name, p):
  size = p['image_size']
  if name == 'simmim':
    grid = size // p['model_patch_size']
    args = dict(input_size=size, mask_patch_size=p['mask_patch_size'],
                model_patch_size=p['model_patch_size'], mask_ratio=p['mask_ratio'])
  else:
    grid = size // p['patch_size']
    args = dict(num_masking_patches=p['num_masking_patches'],
                min_num_patches=p['min_num_patches'], max_num_patches=p['max_num_patches'],
                min_aspect=p['min_aspect'])
  return MaskSpec(name, (grid, grid), tuple(args.items()))


def _like(default, value, key):
  """`value` cast to the type of `default` (tuples from lists, floats from ints)."""
  try:
    if isinstance(default, bool):
      if not isinstance(value, (bool, int)):
        raise TypeError
      return bool(value)
    if isinstance(default, tuple):
      value = tuple(value)
      if not value:
        return value
      return tuple(_like(default[0], v, key) for v in value)
    if isinstance(default, (int, float)) and isinstance(value, bool):
      raise TypeError
    if isinstance(default, int) and float(value) != int(value):
      raise TypeError
    return type(default)(value)
  except (TypeError, ValueError):
    raise ValueError(f'parameter {key!r} must be like {default!r}, got {value!r}') from None


def _check(name, p):
  """ValueError naming the first bad parameter."""
  def fail(key, why):
    raise ValueError(f'recipe {name!r}: parameter {key!r} = {p[key]!r} {why}')

  for key, value in p.items():
    if key.endswith('_p') or key in ('mask_ratio',):
      for v in (value if isinstance(value, tuple) else (value,)):
        if not 0.0 <= v <= 1.0:
          fail(key, 'must be probabilities in [0, 1]')
    if key in ('scale', 'global_scale', 'local_scale'):
      if len(value) != 2 or not 0.0 < value[0] <= value[1] <= 1.0:
        fail(key, 'must be (min, max) with 0 < min <= max <= 1')
    if key in ('ratio', 'blur_sigma'):
      if len(value) != 2 or not 0.0 < value[0] <= value[1]:
        fail(key, 'must be (min, max) with 0 < min <= max')
    if key in ('brightness', 'contrast', 'saturation') and value < 0:
      fail(key, 'must be >= 0')
    if key == 'hue' and not 0.0 <= value <= 0.5:
      fail(key, 'must be in [0, 0.5]')
    if key.endswith('size') and value < 1:
      fail(key, 'must be >= 1')
    if key == 'interpolation' and value not in INTERPOLATIONS:
      fail(key, f'must be one of {", ".join(INTERPOLATIONS)}')
  if 'blur_p' in p:
    for key in ('blur_p', 'solarize_p', 'photometric'):
      if len(p[key]) != 2:
        fail(key, 'must give one entry per view (2)')
  if name == 'multicrop':
    if p['n_global'] < 1 or p['n_local'] < 0:
      fail('n_global', 'and n_local must be >= 1 and >= 0')
    for key in ('global_blur_p', 'global_solarize_p'):
      if len(p[key]) != p['n_global']:
        fail(key, f'must give one probability per global view (n_global = {p["n_global"]})')
  if name == 'eval' and not 0.0 < p['crop_pct'] <= 1.0:
    fail('crop_pct', 'must be in (0, 1]')
  if name == 'simmim':
    if p['mask_patch_size'] % p['model_patch_size']:
      fail('mask_patch_size', f'must be a multiple of model_patch_size {p["model_patch_size"]}')
    if p['image_size'] % p['mask_patch_size']:
      fail('image_size', f'must be a multiple of mask_patch_size {p["mask_patch_size"]}')
  if name == 'beit':
    if p['image_size'] % p['patch_size']:
      fail('image_size', f'must be a multiple of patch_size {p["patch_size"]}')
    if not 0 < p['num_masking_patches'] <= (p['image_size'] // p['patch_size']) ** 2:
      fail('num_masking_patches', 'must be in [1, number of patches]')
    if p['min_num_patches'] < 1 or p['max_num_patches'] < 0:
      fail('min_num_patches', 'must be >= 1 (and max_num_patches >= 0, 0 = no cap)')
    if not 0.0 < p['min_aspect'] <= 1.0:
      fail('min_aspect', 'must be in (0, 1]; the maximum aspect is 1 / min_aspect')

