"""MoCo v3 (Chen, Xie & He, 2021). Presets, chosen by `--config configs/moco_v3.py:PRESET`:

- tiny (the default): the narrow CPU ResNet (widths 8-16-32-64, CIFAR stem) on the embedded
  10k/2k CIFAR-10 subset at 32 px, batch 128, 4 epochs, LARS lr 0.3 * bs / 256, temperature 0.2,
  momentum 0.99 -> 1 (cosine), projector 512-128, predictor 512-128.
    python -m jssl.main --config configs/moco_v3.py --workdir runs/moco_v3-tiny
  A few minutes on 2 CPU cores; kNN top-1 above the random-init network's.
- cifar10_cpu: the 30-minute CPU budget on the full CIFAR-10 (common.cifar10_cpu):
  BYOL's CPU recipe (LARS lr 1.0, tau 0.99 -> 1, heads 512-128) with MoCo v3's InfoNCE at
  T 0.2, 24 px views cropped from (0.2, 1), 2900 steps.
    python benchmarks/cifar10_cpu.py --data DIR --methods moco_v3
- cifar10: ResNet-18 (CIFAR stem), 32 px, batch 256, 1000 epochs, solo-learn's mocov3: LARS
  lr 0.3 * bs / 256 (eta 0.02), wd 1e-6, warm-up 10 epochs + cosine, temperature 0.2,
  projector 4096-256 (2 layers, last BN), predictor 4096-256, momentum 0.99 -> 1, the
  asymmetric (BYOL) augmentations at 32 px.
    python -m jssl.main --config configs/moco_v3.py:cifar10 --workdir runs/moco_v3-cifar10
  Expected: about 93% linear top-1 on CIFAR-10 (solo-learn reports 93.1%).
- imagenet: ResNet-50 at 224 px, 100 epochs, the official code's 100-epoch set-up (CONFIG.md):
  batch 4096, LARS lr 0.6 * bs / 256, wd 1e-6, warm-up 10 epochs + cosine, temperature 1.0,
  momentum 0.99 -> 1 (cosine), projector 4096-256 (2 layers, last BN), predictor 4096-256
  (no last BN), BYOL's augmentations with crop scale 0.2-1.
    python -m jssl.main --config configs/moco_v3.py:imagenet --workdir runs/moco_v3-in1k
  Expected (the paper / code): 68.9% linear top-1 (72.8% with --config.total_epochs=300
  --config.optim.lr=0.3 --config.optim.weight_decay=1.5e-6).
- imagenet_vit: ViT-S/16 (12 heads, as MoCo v3's ViT-Small) at 224 px, batch 4096, AdamW
  lr 1.5e-4 * bs / 256, wd 0.1, warm-up 40 epochs + cosine, 300 epochs, temperature 0.2,
  momentum 0.99 -> 1, projector 4096-4096-256 (3 layers, last BN), predictor 4096-256 (last BN),
  frozen random patch projection, BYOL's augmentations (crop 0.08-1), CLS features.
    python -m jssl.main --config configs/moco_v3.py:imagenet_vit --workdir runs/moco_v3-vits
  Expected (the paper): 73.2% linear top-1 after 300 epochs.
"""

from jssl import config_files


def _common():
  return config_files.sibling(__file__, 'common')


def get_config(arg=None):
  common = _common()
  preset = arg or 'tiny'
  c = common.base('moco_v3', preset)
  c.method.update(temperature=0.2, tau_base=0.99, tau_final=1.0, proj_hidden_dims=(4096,),
                  proj_dim=256, pred_hidden_dims=(4096,), pred_last_bn=False,
                  freeze_patch_embed=False)
  c.optim.update(name='lars', lr=0.3, lr_scaling='linear', weight_decay=1e-6,
                 trust_coefficient=0.02, warmup_epochs=10.0)
  c.data = common.data_block('byol_cifar')
  if preset == 'tiny':
    common.tiny(c)
    c.method.update(proj_hidden_dims=(512,), proj_dim=128, pred_hidden_dims=(512,))
  elif preset == 'cifar10_cpu':
    common.cifar10_cpu(c, steps=2900)
    # MoCo v3 (ResNet) as BYOL's CPU preset (LARS lr 1.0, tau 0.99 -> 1, heads 512-128) with
    # its InfoNCE at T 0.2 over the batch, 24 px views of (0.2, 1).
    c.method.update(proj_hidden_dims=(512,), proj_dim=128, pred_hidden_dims=(512,),
                    temperature=0.2)
    c.optim.update(lr=1.0, weight_decay=1e-5)
    common.cpu_views(c)
  elif preset == 'cifar10':
    common.cifar10(c)
    c.batch_size = 256
    c.optim.update(name='lars', weight_decay=1e-6, trust_coefficient=0.02)
  elif preset in ('imagenet', 'imagenet_vit'):
    common.imagenet(c)
    c.data = common.data_block('byol', 'tfds:imagenet2012', 'tfds:imagenet2012', 224)
    c.data.eval_split = 'validation'
    c.batch_size = 4096
    if preset == 'imagenet':
      c.data.augment.scale = (0.2, 1.0)
      c.total_epochs = 100
      c.method.update(temperature=1.0)
      c.optim.update(name='lars', lr=0.6, weight_decay=1e-6, trust_coefficient=1e-3,
                     warmup_epochs=10.0)
    else:
      c.model = common.vit_model('vit_small', 16, num_heads=12, imagenet=True)
      c.total_epochs = 300
      c.method.update(temperature=0.2, proj_hidden_dims=(4096, 4096), pred_last_bn=True,
                      freeze_patch_embed=True)
      c.optim.update(name='adamw', lr=1.5e-4, weight_decay=0.1, b1=0.9, b2=0.999,
                     warmup_epochs=40.0)
  else:
    raise ValueError(f"unknown preset {preset!r} for configs/moco_v3.py; choose 'tiny', "
                     "'cifar10_cpu', 'cifar10', 'imagenet' or 'imagenet_vit'")
  return c
