"""jssl.data: image sources, SSL view recipes, masks, the tf.data pipeline and device feeding.

The only jssl package that imports TensorFlow. Interfaces (the engine relies on them):
- `jssl.data.config.data_config()`: the `config.data` ConfigDict block with its defaults.
- `jssl.data.augment.make_recipe(name, **params)`: a `Recipe`, mapping one uint8 image and a
  stateless seed to a dict of float32 views in [0, 1] (`view_0`, `view_1`, ...; plus `mask`
  where the recipe makes one); `Recipe.view_shapes` gives their shapes.
- `jssl.data.pipeline`: deterministic per-process iterators of numpy batches that can start at
  any step; `jssl.data.feeding`: numpy batches -> global `jax.Array`s sharded on the mesh.
"""
