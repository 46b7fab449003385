"""MoCo v3 (Chen, Xie & He, 2021, "An empirical study of training self-supervised ViTs").

No queue: the keys of the global batch are the negatives. A query encoder (backbone + projector +
predictor) and a momentum encoder (backbone + projector, EMA of the query's). With `q_v` the
query encoder's predictions and `k_v` the momentum encoder's projections of view v,
`ctr(q, k) = 2 tau * CE(q k^T / tau, labels = diagonal)` = `2 tau * losses.info_nce(q, k, tau)`
(cosine logits), and `loss = ctr(q0, sg(k1)) + ctr(q1, sg(k0))`.

- params: `{'backbone', 'projector', 'predictor'}`; batch_stats: their BatchNorm statistics.
- method_state: `{'target_params': {'backbone', 'projector'}, 'target_batch_stats'}`.
- momentum update after each optimizer step k: `target = m * target + (1 - m) * online` with
  `m = 1 - (1 - tau_base)(cos(pi (k + 1) / K) + 1) / 2` (momentum.momentum_at at k + 1: MoCo v3
  updates with m(step) just before computing the keys of `step`, i.e. with the params after
  step - 1's update).
- BatchNorm (projector / predictor, ResNet): each view is its own batch (two forward passes, as
  MoCo v3's code does), with statistics over the global batch (its SyncBN); no Shuffle BN: with
  in-batch negatives every key shares its batch's statistics.
- ViT backbones: `PooledViT` (a models.vit.ViT returning its 'pooled' CLS features, with the
  ViT's own parameter names) and `freeze_patch_embed` (the paper's stop-gradient on the random
  patch projection: its gradient is stopped in loss_fn and `update_state` restores its old
  values, so neither the optimizer nor weight decay moves it).
- features: the query backbone in inference mode.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jssl import losses
from jssl.methods import base, ema, momentum, two_view
from jssl.models import vit as vit_lib


class PooledViT(vit_lib.ViT):
  """A ViT whose output is its `[N, D]` 'pooled' features (what `models.Encoder` expects)."""

  def __call__(self, images, train: bool = True, **kwargs):
    return super().__call__(images, train, **kwargs)['pooled']


def pooled_vit(vit: vit_lib.ViT) -> PooledViT:
  """The `PooledViT` with the fields of `vit`."""
  return PooledViT(**{f.name: getattr(vit, f.name) for f in dataclasses.fields(vit)
                      if f.init and f.name not in ('parent', 'name')})


@dataclasses.dataclass(frozen=True)
class MoCoV3(two_view.TwoViewMethod):
  """MoCo v3 with `backbone` (ResNet or PooledViT), `projector` and `predictor` modules."""
  backbone: nn.Module
  projector: nn.Module
  predictor: nn.Module
  temperature: float = 0.2
  total_steps: int = 1000
  tau_base: float = 0.99
  tau_final: float = 1.0
  freeze_patch_embed: bool = False
  image_size: int = 32
  mean: tuple = base.CIFAR10_MEAN
  std: tuple = base.CIFAR10_STD
  name: str = 'moco_v3'

  def init_state(self, params, batch_stats):
    return two_view.target_copy(params, batch_stats)

  def momentum(self, step):
    return momentum.momentum_at(step, self.total_steps, self.tau_base, self.tau_final)

  def _frozen(self, params):
    if not self.freeze_patch_embed:
      return params
    backbone = dict(params['backbone'])
    backbone['patch_embed'] = jax.tree.map(jax.lax.stop_gradient, backbone['patch_embed'])
    return dict(params, backbone=backbone)

  def embed(self, params, batch_stats, method_state, batch):
    """`(q [2, N, D], k [2, N, D], new_batch_stats, new_target_batch_stats)`, training mode."""
    x = jnp.stack([self.normalize(batch['view_0']), self.normalize(batch['view_1'])])

    def run(model, variables, out):
      def fn(xv):
        outs, upd = model.apply(variables, xv, train=True, mutable=['batch_stats'])
        return outs[out], upd['batch_stats']
      return momentum.grouped_apply(fn, x, 1)

    q, stats = run(self.online, {'params': self._frozen(params), 'batch_stats': batch_stats}, 2)
    k, t_stats = run(self.target, {'params': method_state['target_params'],
                                   'batch_stats': method_state['target_batch_stats']}, 1)
    return q, jax.lax.stop_gradient(k), stats, t_stats

  def loss_fn(self, params, batch_stats, method_state, batch, rng, step):
    del rng
    q, k, batch_stats, t_stats = self.embed(params, batch_stats, method_state, batch)
    t = self.temperature
    loss = 2 * t * (losses.info_nce(q[0], k[1], temperature=t) +
                    losses.info_nce(q[1], k[0], temperature=t))
    new_state = dict(method_state, target_batch_stats=t_stats)
    return loss, (batch_stats, new_state, {'loss': loss, 'tau': self.momentum(step + 1)})

  def update_state(self, old_params, params, method_state, step):
    if self.freeze_patch_embed:
      backbone = dict(params['backbone'], patch_embed=old_params['backbone']['patch_embed'])
      params = dict(params, backbone=backbone)
    online = {k: params[k] for k in ('backbone', 'projector')}
    target = ema.ema_update(method_state['target_params'], online, self.momentum(step + 1))
    return params, dict(method_state, target_params=target)


def from_config(config, total_steps: int) -> MoCoV3:
  """MoCo v3 from a config: `model` a ResNet or a ViT block (name 'vit_*'), built by
  jssl.models.from_config; `method`: temperature, tau_base, tau_final, proj_hidden_dims,
  proj_dim, pred_hidden_dims, pred_last_bn, freeze_patch_embed."""
  from jssl import models  # pylint: disable=g-import-not-at-top
  m, model = config.method, config.model
  backbone = models.from_config(model)
  if model.name.startswith('vit'):
    backbone = pooled_vit(backbone)
  dtype = models.dtype_of(model)
  mlp = lambda hidden, last_bn: models.MLP(tuple(hidden), m.proj_dim, last_bn=last_bn,
                                           dtype=dtype)
  return MoCoV3(backbone=backbone, projector=mlp(m.proj_hidden_dims, True),
                predictor=mlp(m.pred_hidden_dims, m.pred_last_bn),
                temperature=float(m.temperature), total_steps=int(total_steps),
                tau_base=float(m.tau_base), tau_final=float(m.tau_final),
                freeze_patch_embed=bool(m.freeze_patch_embed) and model.name.startswith('vit'),
                image_size=models.image_size(config), mean=tuple(model.mean),
                std=tuple(model.std))
