"""jssl.models: Flax (linen) backbones and heads. Nothing here knows of data, methods or training."""
