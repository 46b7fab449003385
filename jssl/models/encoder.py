"""`Encoder`: a backbone followed by a projector (and optionally a predictor), as one module.

`Encoder(backbone, projector, predictor)(x, train) -> (h, z, p)`: pooled features h, projection
z, prediction p (None without a predictor). Its params are `{'backbone', 'projector'
[, 'predictor']}`, so a teacher without a predictor is the same tree minus 'predictor'.
`Encoder.embed(x, train)` returns h only (for evaluation).
"""

from typing import Optional

import flax.linen as nn


class Encoder(nn.Module):
  """backbone -> projector [-> predictor]."""
  backbone: nn.Module
  projector: nn.Module
  predictor: Optional[nn.Module] = None

  def __call__(self, x, train: bool = True):
    h = self.backbone(x, train)
    z = self.projector(h, train)
    p = self.predictor(z, train) if self.predictor is not None else None
    return h, z, p

  def embed(self, x, train: bool = False):
    return self.backbone(x, train)
