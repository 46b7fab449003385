"""Mean Shift, MSF (Koohpayegani et al., 2021). Presets, by `--config configs/mean_shift.py:PRESET`:

View recipe: MSF's best set-up is a weak target view (crop + flip only) and a strong online view
(MoCo v2's augmentations): `data.augment.photometric=(True, False)` makes view_1 (the target's)
a crop and flip only. The cifar10 and imagenet presets use it; tiny and cifar10_cpu use the
strong views on both sides (MSF's strong/strong variant, which cifar10_cpu's symmetric loss
needs: each view is a target there).

- tiny (the default): the narrow CPU ResNet (widths 8-16-32-64, CIFAR stem) on the embedded
  10k/2k CIFAR-10 subset at 32 px, batch 128, 4 epochs, SGD lr 0.3 * bs / 256, wd 1e-4,
  bank 4096, k 5, momentum 0.99 (constant), heads 512-128, Shuffle BN over 4 groups of 32.
    python -m jssl.main --config configs/mean_shift.py --workdir runs/mean_shift-tiny
  A few minutes on 2 CPU cores; kNN top-1 above the random-init network's.
- cifar10_cpu: the 30-minute CPU budget on the full CIFAR-10 (common.cifar10_cpu):
  BYOL's CPU heads (512-128), k = 5 in a bank of 16384, tau 0.99, symmetric, SGD
  lr 0.3, 24 px views cropped from (0.2, 1), 2900 steps.
    python benchmarks/cifar10_cpu.py --data DIR --methods mean_shift
  Measured (docs/results.md): kNN top-1 50.16% (k = 20) against 27.80% at random init.
- cifar10: ResNet-18 (CIFAR stem), 32 px, batch 256, 1000 epochs, SGD lr 0.3 * bs / 256,
  momentum 0.9, wd 1e-4, warm-up 10 epochs + cosine, bank 32768, k 5, momentum 0.99, heads
  4096-512, weak target view (jssl's choice: neither the paper nor solo-learn has a CIFAR
  set-up; this is solo-learn's MoCo v2+ optimizer with MSF's method settings).
    python -m jssl.main --config configs/mean_shift.py:cifar10 --workdir runs/mean_shift-cifar10
  No published number to compare with.
- imagenet: the paper / official script: ResNet-50 at 224 px, batch 256, SGD lr 0.05 * bs / 256,
  momentum 0.9, wd 1e-4, 200 epochs, cosine (no warm-up), bank 1,024,000 (the official run
  script; --config.method.bank_size=256000 for a lighter bank), k 5, target momentum 0.99
  (constant), projector 4096-512, predictor 4096-512, the target on a shuffled batch (Shuffle
  BN over 8 groups of 32), weak target view (crop and flip) and strong online view.
    python -m jssl.main --config configs/mean_shift.py:imagenet --workdir runs/mean_shift-in1k
  Expected (the paper, weak/strong views): 72.4% linear top-1 after 200 epochs.
"""

from jssl import config_files


def _common():
  return config_files.sibling(__file__, 'common')


MOCO_JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)


def get_config(arg=None):
  common = _common()
  preset = arg or 'tiny'
  c = common.base('mean_shift', preset)
  c.method.update(proj_hidden_dims=(4096,), proj_dim=512, pred_hidden_dims=(4096,),
                  bank_size=32768, k=5, symmetric=False, tau_base=0.99, tau_final=0.99,
                  bn_groups=1, shuffle_bn=True)
  c.optim.update(name='sgd', lr=0.3, lr_scaling='linear', weight_decay=1e-4, momentum=0.9,
                 warmup_epochs=10.0)
  c.data = common.data_block('simclr_cifar')
  c.data.augment.update(blur_p=(0.5, 0.5), **MOCO_JITTER)
  if preset == 'tiny':
    common.tiny(c)
    c.method.update(proj_hidden_dims=(512,), proj_dim=128, pred_hidden_dims=(512,),
                    bank_size=4096, bn_groups=4)
  elif preset == 'cifar10_cpu':
    common.cifar10_cpu(c, steps=2900)
    # MSF with BYOL's CPU heads (512-128), k = 5 neighbours in a bank of 16384, tau 0.99,
    # symmetric (each view predicts the other's neighbourhood: twice the targets per step), SGD
    # lr 0.3, 24 px views of (0.2, 1).
    c.method.update(proj_hidden_dims=(512,), proj_dim=128, pred_hidden_dims=(512,),
                    bank_size=16384, symmetric=True, bn_groups=4)
    c.optim.update(name='sgd', lr=0.3, weight_decay=1e-4, momentum=0.9)
    common.cpu_views(c)
  elif preset == 'cifar10':
    common.cifar10(c)
    c.batch_size = 256
    c.optim.update(name='sgd', weight_decay=1e-4, warmup_epochs=10.0)
    c.data.augment.photometric = (True, False)
  elif preset == 'imagenet':
    common.imagenet(c)
    c.data = common.data_block('simclr', 'tfds:imagenet2012', 'tfds:imagenet2012', 224)
    c.data.eval_split = 'validation'
    c.data.augment.update(scale=(0.2, 1.0), blur_p=(0.5, 0.5), photometric=(True, False),
                          **MOCO_JITTER)
    c.batch_size = 256
    c.total_epochs = 200
    c.method.update(bank_size=1_024_000, bn_groups=8)
    c.optim.update(name='sgd', lr=0.05, weight_decay=1e-4, warmup_epochs=0.0)
  else:
    raise ValueError(f"unknown preset {preset!r} for configs/mean_shift.py; choose 'tiny', "
                     "'cifar10_cpu', 'cifar10' or 'imagenet'")
  return c
