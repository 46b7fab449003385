"""`TwoViewMethod`: the shared half of the methods that train one `Encoder` on two views.

SimCLR, BYOL, SimSiam, NNCLR, VICReg, Barlow Twins, MoCo v2/v3 and MeanShift all read the batch
keys `view_0` and `view_1` (`image_size` px), train `Encoder(backbone, projector[, predictor])`
(`model`, also called `online`; the teacher of the EMA methods is `target`, the same tree without
the predictor), run both views through it as one batch of 2N (BatchNorm statistics over both
views and, under jit over a sharded batch, over every device), and are evaluated on the pooled
backbone features. Subclasses are frozen dataclasses with fields `backbone`, `projector`,
optionally `predictor`, `image_size`, `mean`, `std`, and implement `loss_fn` (and, to hold extra
state, `init_state`).
"""

import jax
import jax.numpy as jnp

from jssl import models
from jssl.methods import base
from jssl.methods.base import CIFAR10_MEAN, CIFAR10_STD
from jssl.models import Encoder


class TwoViewMethod(base.Method):
  """input_spec / init / embed / features for an `Encoder` trained on `view_0`, `view_1`."""

  @property
  def model(self) -> Encoder:
    return Encoder(self.backbone, self.projector, getattr(self, 'predictor', None))

  @property
  def online(self) -> Encoder:
    return self.model

  @property
  def target(self) -> Encoder:
    """The teacher network: the online one without its predictor."""
    return Encoder(self.backbone, self.projector)

  def input_spec(self):
    shape = (self.image_size, self.image_size, 3)
    return {'view_0': (shape, jnp.float32), 'view_1': (shape, jnp.float32)}

  def init(self, rng, batch):
    variables = self.model.init(rng, self.normalize(batch['view_0'][:2]), train=True)
    params, batch_stats = variables['params'], variables['batch_stats']
    return params, batch_stats, self.init_state(params, batch_stats)

  def init_state(self, params, batch_stats) -> dict:
    """The method_state at step 0 (none by default)."""
    del params, batch_stats
    return {}

  def embed(self, params, batch_stats, batch):
    """`((z1, z2), (p1, p2), new_batch_stats)` of the two views in training mode; the
    predictions are `(None, None)` without a predictor."""
    x = self.normalize(jnp.concatenate([batch['view_0'], batch['view_1']], axis=0))
    (_, z, p), updates = self.model.apply({'params': params, 'batch_stats': batch_stats}, x,
                                          train=True, mutable=['batch_stats'])
    preds = jnp.split(p, 2, axis=0) if p is not None else (None, None)
    return tuple(jnp.split(z, 2, axis=0)), tuple(preds), updates['batch_stats']

  def features(self, params, batch_stats, images):
    return self.model.apply({'params': params, 'batch_stats': batch_stats},
                            self.normalize(images), train=False, method=Encoder.embed)


def target_copy(params, batch_stats) -> dict:
  """`{'target_params', 'target_batch_stats'}`: fresh copies of the backbone and projector
  subtrees, the EMA teacher's starting point."""
  copy = lambda t: jax.tree.map(jnp.array, {k: t[k] for k in ('backbone', 'projector') if k in t})
  return {'target_params': copy(params), 'target_batch_stats': copy(batch_stats)}


def common_kwargs(config) -> dict:
  """The fields every two-view method takes from a config: the backbone (jssl.models'
  builder), the view size and the input normalization (`config.model.mean` / `std`)."""
  model = config.model
  return dict(backbone=models.from_config(model), image_size=models.image_size(config),
              mean=tuple(model.get('mean', None) or CIFAR10_MEAN),
              std=tuple(model.get('std', None) or CIFAR10_STD))


def mlp(config, hidden, out, last_bn=False):
  """A projector / predictor MLP in the compute dtype of `config.model`."""
  return models.MLP(hidden_dims=tuple(hidden), out_dim=int(out), last_bn=bool(last_bn),
                    dtype=models.dtype_of(config.model))
