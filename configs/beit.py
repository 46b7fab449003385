"""BEiT pre-training (Bao et al., 2022), after the dVAE tokenizer (configs/dvae.py). Presets, by
`--config configs/beit.py:PRESET`; every preset needs the tokenizer's run directory:

    python -m jssl.main --config configs/dvae.py --workdir runs/dvae-tiny
    python -m jssl.main --config configs/beit.py --workdir runs/beit-tiny \
        --config.method.tokenizer_workdir=runs/dvae-tiny

The tokenizer's down-sampling (2**num_down) must equal the ViT's patch size (tiny / cifar10: 4 at
32 px, an 8 x 8 grid; imagenet: 16 at 224 px, 14 x 14).

- tiny (the default): a small ViT (width 128, depth 4, 4 heads, patch 4, mask token) on the
  embedded CIFAR-10 subset at 32 px; block-wise masks of 26 of the 64 patches (~40%, blocks of at
  least 4 patches), BEiT's colour jitter (0.4, 0.4, 0.4), crop and flip; batch 256, 10 epochs,
  AdamW lr 1e-3 (raised for the short run), the tokenizer of configs/dvae.py:tiny.
- cifar10_cpu: the 30-minute CPU budget on the full CIFAR-10 (common.cifar10_cpu), with the
  tokenizer of configs/dvae.py:cifar10_cpu: the tiny preset's ViT (width 128, depth 4, 4 heads,
  patch 4 at 32 px, mask token, mean-pooled), 26 of 64 patches masked in blocks, batch 256, 900
  steps (4.6 epochs), AdamW lr 1e-3 (BEiT's 1.9e-4 per 256 images is sized for 800 epochs)
  after 0.5 epoch, clip 3.0; kNN (k = 20, 200) before and after training.
    python benchmarks/cifar10_cpu.py --data DIR --methods beit  # the dVAE, then BEiT
- cifar10: ViT-Tiny (192, 12 deep, 3 heads) with patch 4 at 32 px, 26 of 64 patches masked,
  batch 512, AdamW (0.9, 0.999) lr 1.5e-3 * bs / 2048, wd 0.05, drop path 0.1, LayerScale 0.1,
  clip 3.0, 10 warm-up epochs + cosine, 800 epochs; the tokenizer of configs/dvae.py:cifar10.
- imagenet: the paper's ViT-B/16 at 224, 75 of 196 patches masked (blocks of >= 16), batch 2048,
  AdamW (0.9, 0.999) lr 1.5e-3, wd 0.05, drop path 0.1, LayerScale 0.1, clip 3.0, 10 warm-up
  epochs, 800 epochs, ImageNet mean / std, mean-pooled features; the tokenizer of
  configs/dvae.py:imagenet (the paper used DALL-E's released tokenizer instead).
  Expected (the paper, ViT-B, 800 epochs, DALL-E tokenizer): 83.2% top-1 after fine-tuning.
"""

from jssl import config_files


def _load(name):
  return config_files.sibling(__file__, name)


def _data(common, source, size, patch_size, num_masking_patches, min_num_patches):
  d = common.data_block('beit', source, source, size)
  d.augment.update(image_size=size, patch_size=patch_size,
                   num_masking_patches=num_masking_patches, min_num_patches=min_num_patches)
  if size <= 64:
    d.augment.scale = (0.35, 1.0)
  return d


def get_config(arg=None):
  common = _load('common')
  preset = arg or 'tiny'
  c = common.base('beit', preset)
  c.method.update(tokenizer_workdir='')
  # lr 1.5e-3 per 2048 examples = 1.875e-4 per 256 (linear scaling).
  c.optim.update(name='adamw', lr=1.5e-3 * 256 / 2048, lr_scaling='linear', weight_decay=0.05,
                 b1=0.9, b2=0.999, eps=1e-8, warmup_epochs=10.0, schedule='cosine',
                 end_lr_factor=0.0, clip_norm=3.0)
  if preset == 'tiny':
    common.tiny(c)
    c.model = common.vit_model('vit_tiny', 4, width=128, depth=4, num_heads=4,
                                pool='mean')
    c.data = _data(common, 'embedded', 32, 4, 26, 4)
    c.batch_size = 256
    c.total_epochs = 10
    c.optim.update(lr=1e-3, warmup_epochs=1.0)
  elif preset == 'cifar10_cpu':
    common.cifar10_cpu(c, steps=900)
    c.model = common.vit_model('vit_tiny', 4, width=128, depth=4, num_heads=4, pool='mean')
    c.data = _data(common, 'tfds:cifar10', 32, 4, 26, 4)
    c.optim.update(name='adamw', lr=1e-3, weight_decay=0.05, warmup_epochs=0.5)
  elif preset == 'cifar10':
    common.cifar10(c)
    c.model = common.vit_model('vit_tiny', 4, pool='mean')
    c.model.update(drop_path_rate=0.1, layerscale_init=0.1)
    c.data = _data(common, 'tfds:cifar10', 32, 4, 26, 4)
    c.batch_size = 512
    c.total_epochs = 800
    c.optim.update(name='adamw', weight_decay=0.05, warmup_epochs=10.0)
  elif preset == 'imagenet':
    common.imagenet(c)
    c.model = common.vit_model('vit_base', 16, pool='mean', imagenet=True)
    c.model.update(drop_path_rate=0.1, layerscale_init=0.1)
    c.data = _data(common, 'tfds:imagenet2012', 224, 16, 75, 16)
    c.data.eval_split = 'validation'
    c.batch_size = 2048
    c.total_epochs = 800
    c.optim.update(name='adamw', weight_decay=0.05, warmup_epochs=10.0)
  else:
    raise ValueError(f"unknown preset {preset!r} for configs/beit.py; choose 'tiny', "
                     "'cifar10_cpu', 'cifar10' or 'imagenet'")
  return c
