"""jssl.eval: kNN and linear probe on frozen features (no TensorFlow, no flags).

Modules (functions are not re-exported here, so that `evaluate` and `linear_probe` keep naming
their modules):
- `knn`: `weighted_knn`, the InstDisc / DINO weighted kNN top-1; `pixel_knn`, the raw-pixel
  baseline.
- `linear_probe`: `linear_probe`, a linear classifier trained on precomputed frozen features.
- `features`: `extract_features` / `extract_many`, a `features_fn` over batches, padding dropped.
- `evaluate`: `evaluate`, `baselines`, `eval_config`: what the trainer's monitor and
  `python -m jssl.eval` call.
- `pictures`: the nearest-neighbour grid and the PCA / UMAP map of the eval features
  (`python -m jssl.eval --pictures`); `recon_grid`: masked-modeling reconstructions.
"""

from jssl.eval import evaluate, features, knn, linear_probe

__all__ = ['evaluate', 'features', 'knn', 'linear_probe']
