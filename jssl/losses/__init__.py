"""jssl.losses: every SSL loss as a pure JAX function (definitions: docs/losses.md, docstrings).

Import with `from jssl import losses`; no Flax, no TensorFlow, nothing else from jssl.
"""

from jssl.losses._common import normalize
from jssl.losses.contrastive import info_nce, moco_loss, nearest_neighbors, nt_xent
from jssl.losses.correlation import barlow_twins_loss, sinkhorn, swav_loss, vicreg_loss
from jssl.losses.distillation import (byol_loss, dino_center, dino_loss, ibot_patch_center,
                                     ibot_patch_loss, ijepa_loss, koleo_loss, mean_shift_loss,
                                     simsiam_loss, sinkhorn_knopp_teacher)
from jssl.losses.masked import beit_loss, mae_loss, patchify, simmim_loss, unpatchify
from jssl.losses.metric import margin_loss, triplet_loss

__all__ = [
    'margin_loss', 'triplet_loss',
    'info_nce', 'nt_xent', 'moco_loss', 'nearest_neighbors',
    'byol_loss', 'simsiam_loss', 'mean_shift_loss', 'dino_loss', 'dino_center',
    'ibot_patch_loss', 'ibot_patch_center', 'koleo_loss', 'sinkhorn_knopp_teacher', 'ijepa_loss',
    'vicreg_loss', 'barlow_twins_loss', 'sinkhorn', 'swav_loss',
    'patchify', 'unpatchify', 'mae_loss', 'simmim_loss', 'beit_loss',
    'normalize',
]
