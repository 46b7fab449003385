"""SSL view recipes on the host, in TensorFlow: one uint8 image and a stateless seed -> views.

`make_recipe(name, **params)` gives a `Recipe`; `recipe(image, seed)` maps a uint8 [H, W, 3] RGB
image (any size) and a stateless seed (int64 [2]) to a dict of float32 views in [0, 1]
(uint8 in [0, 255] when `on_device`), `view_0`, `view_1`, ... (global crops first), plus `mask` (int32, 1 = masked) for 'simmim' and
'beit'. Only stateless random ops are used, so the output is a pure function of (image, seed),
and everything is graph ops, so a recipe runs inside `tf.data.Dataset.map`.

The recipes and their parameters are in `augment_recipes`; the photometric ops follow
torchvision's semantics (see `augment_ops`). With `on_device=True` the host does only the
geometry (crop, resize, flip), rounds it to uint8 (a quarter of the bytes to batch and copy to
the device, as a torchvision pipeline's PIL crops) and `augment_jax.photometric_fn(name, params)`
does the rest of the same recipe on the accelerator.
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple

import tensorflow as tf

from jssl.data import augment_ops as ops
from jssl.data import augment_recipes
from jssl.data import masks_tf

recipe_defaults = augment_recipes.recipe_defaults
RECIPES = augment_recipes.names()


@dataclasses.dataclass(frozen=True, eq=False)
class Recipe:
  """A view recipe: call it with (image uint8 [H, W, 3], seed int64 [2])."""
  name: str
  params: Dict[str, Any]
  views: Tuple[augment_recipes.ViewSpec, ...]
  mask: Optional[augment_recipes.MaskSpec]

  @property
  def photometric_on_device(self) -> bool:
    """True: the host makes geometry only; `augment_jax.photometric_fn` does colour and blur."""
    return bool(self.params['on_device'])

  @property
  def view_shapes(self) -> Dict[str, Tuple[int, ...]]:
    """Output name -> shape, e.g. {'view_0': (224, 224, 3), ..., 'mask': (14, 14)}."""
    shapes = {v.name: (v.size, v.size, 3) for v in self.views}
    if self.mask is not None:
      shapes['mask'] = tuple(self.mask.grid)
    return shapes

  # Plain graph ops with Python control flow on static values only: autograph would only make
  # tracing inside tf.data several times slower.
  @tf.autograph.experimental.do_not_convert
  def __call__(self, image: tf.Tensor, seed: tf.Tensor) -> Dict[str, tf.Tensor]:
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8:
      raise ValueError(f'recipe {self.name!r} takes uint8 images, got {image.dtype.name}')
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    seeds = tf.random.experimental.stateless_split(seed, len(self.views) + 1)
    out = {}
    for i, view in enumerate(self.views):
      out[view.name] = make_view(image, seeds[i], view, not self.photometric_on_device)
    if self.mask is not None:
      out['mask'] = make_mask(seeds[-1], self.mask)
    return out


def make_recipe(name: str, **params) -> Recipe:
  """The recipe `name` with `params` overriding its defaults (see `recipe_defaults(name)`).

  Raises:
    ValueError: unknown recipe or parameter (naming it and listing the valid ones), or a bad
      value (naming the parameter).
  """
  params = augment_recipes.resolve(name, params)
  views, mask = augment_recipes.plan(name, params)
  return Recipe(name, params, views, mask)


def make_view(image: tf.Tensor, seed: tf.Tensor, view: augment_recipes.ViewSpec,
              photometric: bool = True) -> tf.Tensor:
  """One view: crop + resize (+ flip), then, if `photometric`, the view's colour ops (float32
  in [0, 1]); without them, the geometry rounded to uint8."""
  s_crop, s_flip, s_photo = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
  if view.scale is None:
    x = ops.center_crop(image, view.size, view.crop_pct, view.interpolation)
  else:
    x = ops.random_resized_crop(image, s_crop, view.size, view.scale, view.ratio,
                                view.interpolation)
  x = ops.random_flip(x, s_flip, view.flip_p)
  if photometric:
    x = ops.photometric(x, s_photo, view.photometric)
  else:
    x = tf.cast(tf.round(x * 255.0), tf.uint8)
  return tf.ensure_shape(x, (view.size, view.size, 3))


def make_mask(seed: tf.Tensor, spec: augment_recipes.MaskSpec) -> tf.Tensor:
  """The host mask of a recipe (int32, 1 = masked)."""
  args = dict(spec.args)
  if spec.kind == 'simmim':
    mask = masks_tf.simmim_mask(seed, **args)
  else:
    mask = masks_tf.beit_mask(seed, spec.grid, **args)
  return tf.ensure_shape(mask, spec.grid)
