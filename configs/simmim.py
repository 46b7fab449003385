"""SimMIM (Xie et al., 2022). Presets, by `--config configs/simmim.py:PRESET`:

- tiny (the default): a small ViT (width 128, depth 4, 4 heads, patch 4, mask token) on the
  embedded CIFAR-10 subset at 32 px; mask squares of 8 px (a 4 x 4 grid, 10 of 16 masked),
  batch 256, 10 epochs, AdamW lr 1e-3 * bs / 256 (raised for the short run).
    python -m jssl.main --config configs/simmim.py --workdir runs/simmim-tiny
  CPU minutes; the masked-pixel L1 loss falls from ~0.8 (normalized pixels); kNN top-1 only a
  few points over random init at this length.
- cifar10_cpu: the 30-minute CPU budget on the full CIFAR-10 (common.cifar10_cpu): the tiny
  preset's ViT (width 128, depth 4, 4 heads, patch 4 at 32 px, mask token, mean-pooled), mask
  squares of 8 px at ratio 0.6, batch 256, 1400 steps (7.2 epochs: every patch goes through the
  encoder, where MAE's sees a quarter of them), AdamW (0.9, 0.999) lr 1e-3 (SimMIM's 5e-5 per
  256 images is sized for 800 epochs) after 0.5 epoch, wd 0.05; kNN (k = 20, 200) before and
  after training.
    python benchmarks/cifar10_cpu.py --data DIR --methods simmim
- cifar10: ViT-Tiny (192, 12 deep, 3 heads) with patch 4 at 32 px, mask squares of 8 px
  (SimMIM's 32 px at 224 scaled down), ratio 0.6, batch 512, AdamW (0.9, 0.999)
  lr 1e-4 * bs / 512, wd 0.05, 10 warm-up epochs + cosine, 800 epochs, mean-pooled features.
    python -m jssl.main --config configs/simmim.py:cifar10 --workdir runs/simmim-cifar10
  No published number at this set-up (SimMIM reports ImageNet fine-tuning only).
- imagenet: ViT-B/16 at 224, mask squares of 32 px, ratio 0.6, batch 2048, AdamW (0.9, 0.999)
  lr 1e-4 * bs / 512 = 4e-4, wd 0.05, drop path 0.1, LayerScale 0.1, 10 warm-up epochs,
  800 epochs with cosine decay (the paper's ViT-B run decays x0.1 at epoch 700 instead; its
  100-epoch Swin runs use cosine), sin-cos absolute positions (the paper: shared relative
  position bias), mean-pooled features.
    python -m jssl.main --config configs/simmim.py:imagenet --workdir runs/simmim-in1k
  Expected (the paper, ViT-B, 800 epochs): 83.8% top-1 after fine-tuning (not done by jssl);
  linear probing of MIM features is much lower.
"""

from jssl import config_files


def _load(name):
  return config_files.sibling(__file__, name)


def _data(common, source, size, mask_patch_size, model_patch_size):
  d = common.data_block('simmim', source, source, size)
  d.augment.update(image_size=size, mask_patch_size=mask_patch_size,
                   model_patch_size=model_patch_size, mask_ratio=0.6)
  return d


def get_config(arg=None):
  common = _load('common')
  preset = arg or 'tiny'
  c = common.base('simmim', preset)
  # lr 1e-4 per 512 examples (SimMIM's linear scaling) = 5e-5 per 256.
  c.optim.update(name='adamw', lr=5e-5, lr_scaling='linear', weight_decay=0.05, b1=0.9,
                 b2=0.999, eps=1e-8, warmup_epochs=10.0, schedule='cosine', end_lr_factor=0.0)
  if preset == 'tiny':
    common.tiny(c)
    c.model = common.vit_model('vit_tiny', 4, width=128, depth=4, num_heads=4,
                                pool='mean')
    c.data = _data(common, 'embedded', 32, 8, 4)
    c.batch_size = 256
    c.total_epochs = 10
    c.optim.update(lr=1e-3, warmup_epochs=1.0)
  elif preset == 'cifar10_cpu':
    common.cifar10_cpu(c, steps=1400)
    c.model = common.vit_model('vit_tiny', 4, width=128, depth=4, num_heads=4, pool='mean')
    c.data = _data(common, 'tfds:cifar10', 32, 8, 4)
    c.optim.update(name='adamw', lr=1e-3, weight_decay=0.05, warmup_epochs=0.5)
  elif preset == 'cifar10':
    common.cifar10(c)
    c.model = common.vit_model('vit_tiny', 4, pool='mean')
    c.data = _data(common, 'tfds:cifar10', 32, 8, 4)
    c.batch_size = 512
    c.total_epochs = 800
    c.optim.update(name='adamw', weight_decay=0.05, warmup_epochs=10.0)
  elif preset == 'imagenet':
    common.imagenet(c)
    c.model = common.vit_model('vit_base', 16, pool='mean', imagenet=True)
    c.model.update(drop_path_rate=0.1, layerscale_init=0.1)
    c.data = _data(common, 'tfds:imagenet2012', 224, 32, 16)
    c.data.eval_split = 'validation'
    c.batch_size = 2048
    c.total_epochs = 800
    c.optim.update(name='adamw', weight_decay=0.05, warmup_epochs=10.0)
  else:
    raise ValueError(f"unknown preset {preset!r} for configs/simmim.py; choose 'tiny', "
                     "'cifar10_cpu', 'cifar10' or 'imagenet'")
  return c
