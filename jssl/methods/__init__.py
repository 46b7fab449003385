"""jssl.methods: one file per SSL method, behind the interface of `jssl.methods.base.Method`.

Every method module exports `from_config(config, total_steps) -> Method`, reading its
`config.method` block (its model through `jssl.models.from_config`). `REGISTRY` maps
`config.method.name` to that module; `build(config, total_steps, steps_per_epoch, **inputs)`
calls it (inputs: what a method takes from another run, e.g. BEiT's trained tokenizer).
Adding a method is one method file, one entry here, one config and one test file
(docs/adding_a_method.md).
"""

from jssl.methods import barlow_twins, beit, byol, dino, dinov2, dvae, ibot, ijepa, mae
from jssl.methods import mean_shift, moco_v2, moco_v3, nnclr, simclr, simmim, simsiam, swav, vicreg
from jssl.methods.base import CIFAR10_MEAN, CIFAR10_STD, Method
from jssl.methods.byol import BYOL
from jssl.methods.simclr import SimCLR

REGISTRY = {
    'simclr': simclr, 'nnclr': nnclr, 'moco_v2': moco_v2, 'moco_v3': moco_v3,
    'mean_shift': mean_shift, 'byol': byol, 'simsiam': simsiam, 'dino': dino, 'vicreg': vicreg,
    'barlow_twins': barlow_twins, 'swav': swav, 'mae': mae, 'simmim': simmim, 'dvae': dvae,
    'beit': beit, 'ibot': ibot, 'dinov2': dinov2, 'ijepa': ijepa,
}


def build(config, total_steps: int, steps_per_epoch: int = 0, **inputs) -> Method:
  """The method of `config.method.name`, for a run of `total_steps` steps.

  `inputs`: what the method takes from other runs, given by the caller (BEiT: `tokenizer`, see
  jssl.train.runs.build_method, which reads them).

  `steps_per_epoch`: the engine's (training examples // batch size) when `config.steps_per_epoch`
  is 0; methods with schedules in epochs (DINO, SwAV) read it. Without either they take
  total_steps / total_epochs.
  """
  name = config.method.name
  if name not in REGISTRY:
    raise ValueError(f'unknown config.method.name {name!r}; choose one of {sorted(REGISTRY)}')
  if steps_per_epoch and not config.get('steps_per_epoch', 0):
    config = config.copy_and_resolve_references()
    with config.unlocked():
      config.steps_per_epoch = int(steps_per_epoch)
  return REGISTRY[name].from_config(config, total_steps, **inputs)


__all__ = ['CIFAR10_MEAN', 'CIFAR10_STD', 'Method', 'SimCLR', 'BYOL', 'REGISTRY', 'build']
