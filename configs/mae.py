"""MAE: masked autoencoders (He et al., 2022). Presets, by `--config configs/mae.py:PRESET`:

- tiny (the default): a small ViT (width 128, depth 4, 4 heads, patch 4) on the embedded
  CIFAR-10 subset at 32 px (64 patches, 16 visible), decoder 2 x 64 (4 heads), batch 256,
  10 epochs, AdamW lr 1e-3 * bs / 256 (raised from the paper's 1.5e-4 for the short run).
    python -m jssl.main --config configs/mae.py --workdir runs/mae-tiny
  CPU minutes; the reconstruction loss falls well below its initial ~1.0 (norm_pix targets);
  kNN top-1 is only a few points over random init at this length (MAE features need long
  training and fine-tuning).
- cifar10_cpu: the 30-minute CPU budget on the full CIFAR-10 (common.cifar10_cpu): the tiny
  preset's ViT (width 128, depth 4, 4 heads, patch 4 at 32 px, mean-pooled), decoder 2 x 128
  (4 heads), mask ratio 0.75, norm_pix_loss, the 'mae' crop of (0.2, 1) at 32 px, batch 256,
  2400 steps (12.3 epochs), AdamW (0.9, 0.95) lr 1e-3 (MAE's 1.5e-4 per 256 images is sized for
  800 epochs: at this length it barely leaves its warm-up) after 0.5 epoch, wd 0.05; kNN
  (k = 20, 200) on the 50k training images before and after training. Pre-training + fine-tuning
  against scratch at equal CPU time: benchmarks/finetune_budget.py --methods mae.
    python benchmarks/cifar10_cpu.py --data DIR --methods mae
- cifar10: ViT-Tiny (192 wide, 12 deep, 3 heads) with patch 4 at 32 px, decoder 4 x 256
  (8 heads), mask ratio 0.75, norm_pix_loss, batch 512, AdamW (0.9, 0.95) lr 1.5e-4 * bs / 256,
  wd 0.05, 40 warm-up epochs + cosine, 800 epochs, mean-pooled features.
    python -m jssl.main --config configs/mae.py:cifar10 --workdir runs/mae-cifar10
  No published number at this set-up (solo-learn has no CIFAR MAE); small ViTs trained this way
  usually reach 70-80% kNN / linear top-1 and more after fine-tuning.
- imagenet: the paper's ViT-B/16 at 224, decoder 8 x 512 (16 heads), mask ratio 0.75,
  norm_pix_loss, batch 4096, AdamW (0.9, 0.95) lr 1.5e-4 * bs / 256 = 2.4e-3, wd 0.05, 40
  warm-up epochs + cosine, 800 epochs (--config.total_epochs=1600 for the long run), inputs
  normalized by the ImageNet mean / std, CLS features.
    python -m jssl.main --config configs/mae.py:imagenet --workdir runs/mae-in1k
  Expected (the paper, ViT-B, 1600 epochs): 68.0% linear probe, 83.6% fine-tuned top-1.
"""

from jssl import config_files


def _common():
  return config_files.sibling(__file__, 'common')


def get_config(arg=None):
  common = _common()
  preset = arg or 'tiny'
  c = common.base('mae', preset)
  c.method.update(mask_ratio=0.75, norm_pix_loss=True, decoder_width=512, decoder_depth=8,
                  decoder_num_heads=16)
  c.optim.update(name='adamw', lr=1.5e-4, lr_scaling='linear', weight_decay=0.05, b1=0.9,
                 b2=0.95, warmup_epochs=40.0, schedule='cosine', end_lr_factor=0.0)
  if preset == 'tiny':
    common.tiny(c)
    c.model = common.vit_model('vit_tiny', 4, width=128, depth=4, num_heads=4, pool='mean')
    c.data = common.data_block('mae', 'embedded', 'embedded', 32)
    c.data.augment.image_size = 32
    c.method.update(decoder_width=64, decoder_depth=2, decoder_num_heads=4)
    c.batch_size = 256
    c.total_epochs = 10
    c.optim.update(lr=1e-3, warmup_epochs=1.0)
  elif preset == 'cifar10_cpu':
    common.cifar10_cpu(c, steps=2400)
    c.model = common.vit_model('vit_tiny', 4, width=128, depth=4, num_heads=4, pool='mean')
    c.data = common.data_block('mae', 'tfds:cifar10', 'tfds:cifar10', 32)
    c.data.augment.image_size = 32
    c.method.update(decoder_width=128, decoder_depth=2, decoder_num_heads=4)
    c.optim.update(name='adamw', lr=1e-3, weight_decay=0.05, warmup_epochs=0.5)
  elif preset == 'cifar10':
    common.cifar10(c)
    c.model = common.vit_model('vit_tiny', 4, pool='mean')
    c.data = common.data_block('mae', 'tfds:cifar10', 'tfds:cifar10', 32)
    c.data.augment.image_size = 32
    c.method.update(decoder_width=256, decoder_depth=4, decoder_num_heads=8)
    c.batch_size = 512
    c.total_epochs = 800
    c.optim.update(name='adamw', weight_decay=0.05, warmup_epochs=40.0)
  elif preset == 'imagenet':
    common.imagenet(c)
    c.model = common.vit_model('vit_base', 16, pool='cls', imagenet=True)
    c.data = common.data_block('mae', 'tfds:imagenet2012', 'tfds:imagenet2012', 224)
    c.data.eval_split = 'validation'
    c.batch_size = 4096
    c.total_epochs = 800
    c.optim.update(name='adamw', weight_decay=0.05, warmup_epochs=40.0)
  else:
    raise ValueError(f"unknown preset {preset!r} for configs/mae.py; choose 'tiny', "
                     "'cifar10_cpu', 'cifar10' or 'imagenet'")
  return c
