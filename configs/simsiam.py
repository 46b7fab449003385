"""SimSiam (Chen & He, 2021). Presets, chosen by `--config configs/simsiam.py:PRESET`:

- tiny (the default): the narrow CPU ResNet (one basic block per stage, CIFAR stem) on the
  embedded CIFAR-10 subset at 32 px, batch 128, SGD, projector 512-512-512 (last BN without
  affine), predictor 128, the predictor's lr fixed.
    python -m jssl.main --config configs/simsiam.py --workdir runs/simsiam-tiny
  A few minutes on 2 CPU cores; kNN top-1 above the random-init network's, z_std well above 0.
- cifar10_cpu: the 30-minute CPU budget on the full CIFAR-10 (common.cifar10_cpu):
  solo-learn's SGD recipe (lr 0.5, wd 1e-5, fixed predictor lr) with the tiny
  preset's heads (512-512-512, predictor 128), 24 px views cropped from (0.2, 1), 3700 steps.
    python benchmarks/cifar10_cpu.py --data DIR --methods simsiam
  Measured (docs/results.md): kNN top-1 54.81% (k = 20) against 29.08% at random init.
- cifar10: ResNet-18 (CIFAR stem), 32 px, solo-learn's settings: batch 256, SGD (momentum 0.9)
  lr 0.5 * bs / 256, wd 1e-5, warm-up 10 epochs + cosine, 1000 epochs, projector
  2048-2048-2048 (last BN without affine), predictor 512-2048 at a fixed lr, the symmetric
  "weak" views (crop 0.08-1, jitter 0.4/0.4/0.4/0.1 p 0.8, grey 0.2, blur p 0.5).
    python -m jssl.main --config configs/simsiam.py:cifar10 --workdir runs/simsiam-cifar10
  Expected: about 90% linear top-1 on CIFAR-10 after 1000 epochs (solo-learn reports 90.5%).
- imagenet: the paper's: ResNet-50 at 224 px, batch 512, SGD (momentum 0.9) lr 0.05 * bs / 256,
  wd 1e-4, cosine with no warm-up, 100 epochs, projector 2048-2048-2048 (BN on every layer, the
  last without affine), predictor 512-2048 at a fixed lr, MoCo v2 views (crop 0.2-1, jitter
  0.4/0.4/0.4/0.1 p 0.8, grey 0.2, blur p 0.5).
    python -m jssl.main --config configs/simsiam.py:imagenet --workdir runs/simsiam-in1k
  Expected (the paper): 68.1% linear top-1 after 100 epochs (71.3% after 800).
"""

from jssl import config_files


def _common():
  return config_files.sibling(__file__, 'common')


# MoCo v2's colour jitter and blur, used by SimSiam (solo-learn's "symmetric_weak" on CIFAR).
_VIEWS = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, blur_p=(0.5, 0.5))


def get_config(arg=None):
  common = _common()
  preset = arg or 'tiny'
  c = common.base('simsiam', preset)
  c.method.update(proj_hidden_dims=(2048, 2048), proj_dim=2048, pred_hidden_dims=(512,),
                  fix_pred_lr=True)
  c.optim.update(name='sgd', lr=0.5, lr_scaling='linear', weight_decay=1e-5, momentum=0.9)
  c.data = common.data_block('simclr_cifar')
  c.data.augment.update(**_VIEWS)
  if preset == 'tiny':
    common.tiny(c)
    c.optim.update(name='sgd', weight_decay=1e-5)
    c.method.update(proj_hidden_dims=(512, 512), proj_dim=512, pred_hidden_dims=(128,))
  elif preset == 'cifar10_cpu':
    common.cifar10_cpu(c, steps=3700)
    # solo-learn's SimSiam for CIFAR (SGD lr 0.5, wd 1e-5, the predictor's lr fixed) with the
    # projector 512-512-512 and predictor 128 of the tiny preset, 24 px views of (0.2, 1).
    c.method.update(proj_hidden_dims=(512, 512), proj_dim=512, pred_hidden_dims=(128,))
    c.optim.update(name='sgd', lr=0.5, weight_decay=1e-5, momentum=0.9)
    common.cpu_views(c)
  elif preset == 'cifar10':
    common.cifar10(c)
    c.batch_size = 256
    c.optim.update(name='sgd', weight_decay=1e-5, warmup_epochs=10.0)
  elif preset == 'imagenet':
    common.imagenet(c)
    c.data = common.data_block('simclr', 'tfds:imagenet2012', 'tfds:imagenet2012', 224)
    c.data.eval_split = 'validation'
    c.data.augment.update(scale=(0.2, 1.0), **_VIEWS)
    c.batch_size = 512
    c.total_epochs = 100
    c.optim.update(name='sgd', lr=0.05, weight_decay=1e-4, warmup_epochs=0.0)
  else:
    raise ValueError(f"unknown preset {preset!r} for configs/simsiam.py; choose 'tiny', "
                     "'cifar10_cpu', 'cifar10' or 'imagenet'")
  return c
