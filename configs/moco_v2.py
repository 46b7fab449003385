"""MoCo v2 (Chen et al., 2020). Presets, chosen by `--config configs/moco_v2.py:PRESET`:

- tiny (the default): the narrow CPU ResNet (widths 8-16-32-64, CIFAR stem) on the embedded
  10k/2k CIFAR-10 subset at 32 px, batch 128, 4 epochs, SGD lr 0.3 * bs / 256, queue 4096,
  symmetric loss, key momentum 0.99 -> 0.999 (cosine), Shuffle BN over 4 groups of 32.
    python -m jssl.main --config configs/moco_v2.py --workdir runs/moco_v2-tiny
  A few minutes on 2 CPU cores; kNN top-1 above the random-init network's.
- cifar10_cpu: the 30-minute CPU budget on the full CIFAR-10 (common.cifar10_cpu):
  solo-learn's MoCo v2+ recipe (SGD lr 0.3, wd 1e-4, T 0.2, tau 0.99 -> 0.999, symmetric)
  with projector 512-128, a queue of 16384 and shuffled BN over 4 groups, 24 px views cropped
  from (0.2, 1), 2300 steps (the key encoder and shuffled BN cost a third more per step).
    python benchmarks/cifar10_cpu.py --data DIR --methods moco_v2
- cifar10: ResNet-18 (CIFAR stem), 32 px, batch 256, 1000 epochs, solo-learn's mocov2plus:
  SGD lr 0.3 * bs / 256, momentum 0.9, wd 1e-4, warm-up 10 epochs + cosine, temperature 0.2,
  queue 32768 per view, head 2048-256 (no BN), symmetric loss, momentum 0.99 -> 0.999 (cosine),
  its symmetric_weak augmentations (jitter 0.4/0.4/0.4/0.1, blur p 0.5), global BN per view
  (bn_groups=1: solo-learn's SyncBN on one GPU, no Shuffle BN).
    python -m jssl.main --config configs/moco_v2.py:cifar10 --workdir runs/moco_v2-cifar10
  Expected: about 93% linear top-1 on CIFAR-10 (solo-learn reports 92.9% for MoCo V2+).
- imagenet: the paper: ResNet-50 at 224 px, batch 256, SGD lr 0.03 * bs / 256, momentum 0.9,
  wd 1e-4, 200 epochs, cosine (no warm-up), temperature 0.2, queue 65536, head 2048-128 (no BN),
  key momentum 0.999 (constant), the single-direction loss, Shuffle BN over 8 groups of 32
  (the paper's 8 GPUs), MoCo v2's augmentations (crop 0.2-1, jitter 0.4/0.4/0.4/0.1, blur p 0.5).
    python -m jssl.main --config configs/moco_v2.py:imagenet --workdir runs/moco_v2-in1k
  Expected (the paper): 67.5% linear top-1 after 200 epochs (71.1% after 800).
"""

from jssl import config_files


def _common():
  return config_files.sibling(__file__, 'common')


MOCO_JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)


def get_config(arg=None):
  common = _common()
  preset = arg or 'tiny'
  c = common.base('moco_v2', preset)
  c.method.update(temperature=0.2, queue_size=65536, proj_hidden_dims=(2048,), proj_dim=128,
                  proj_use_bn=False, symmetric=True, tau_base=0.99, tau_final=0.999,
                  bn_groups=1, shuffle_bn=True)
  c.optim.update(name='sgd', lr=0.3, lr_scaling='linear', weight_decay=1e-4, momentum=0.9,
                 warmup_epochs=10.0)
  c.data = common.data_block('simclr_cifar')
  c.data.augment.update(blur_p=(0.5, 0.5), **MOCO_JITTER)
  if preset == 'tiny':
    common.tiny(c)
    c.method.update(queue_size=4096, proj_hidden_dims=(512,), bn_groups=4)
  elif preset == 'cifar10_cpu':
    common.cifar10_cpu(c, steps=2300)
    # solo-learn's MoCo v2+ for CIFAR (SGD lr 0.3, wd 1e-4, T 0.2, tau 0.99 -> 0.999,
    # symmetric) at the CPU budget: projector 512-128, a queue of 16384 (64 batches), shuffled
    # BN over 4 groups, 24 px views of (0.2, 1).
    c.method.update(queue_size=16384, proj_hidden_dims=(512,), proj_dim=128, bn_groups=4)
    c.optim.update(name='sgd', lr=0.3, weight_decay=1e-4, momentum=0.9)
    common.cpu_views(c)
  elif preset == 'cifar10':
    common.cifar10(c)
    c.batch_size = 256
    c.method.update(queue_size=32768, proj_dim=256)
    c.optim.update(name='sgd', weight_decay=1e-4, warmup_epochs=10.0)
  elif preset == 'imagenet':
    common.imagenet(c)
    c.data = common.data_block('simclr', 'tfds:imagenet2012', 'tfds:imagenet2012', 224)
    c.data.eval_split = 'validation'
    c.data.augment.update(scale=(0.2, 1.0), blur_p=(0.5, 0.5), **MOCO_JITTER)
    c.batch_size = 256
    c.total_epochs = 200
    c.method.update(symmetric=False, tau_base=0.999, tau_final=0.999, bn_groups=8)
    c.optim.update(name='sgd', lr=0.03, weight_decay=1e-4, warmup_epochs=0.0)
  else:
    raise ValueError(f"unknown preset {preset!r} for configs/moco_v2.py; choose 'tiny', "
                     "'cifar10_cpu', 'cifar10' or 'imagenet'")
  return c
