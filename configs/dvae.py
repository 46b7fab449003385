"""The dVAE tokenizer of BEiT (DALL-E's stage one). Presets, by `--config configs/dvae.py:PRESET`:

- tiny (the default): vocabulary 256, hidden 32, two stride-2 stages (token grid 8 x 8 at 32 px:
  one token per 4 x 4 patch, BEiT's ViT then uses patch 4), one residual block per stage, on the
  embedded CIFAR-10 subset, batch 128, 10 epochs, Adam lr 1e-3, temperature 1 -> 1/16 over the
  first 80% of the run, KL weight 0.01 warmed up over the first 20%.
    python -m jssl.main --config configs/dvae.py --workdir runs/dvae-tiny
  CPU minutes; writes workdir/recon_<step>.png (original / reconstruction from the argmax
  tokens) at each evaluation.
- cifar10_cpu: BEiT's tokenizer for the 30-minute CPU budget on the full CIFAR-10
  (configs/beit.py:cifar10_cpu): the tiny preset's network (vocabulary 256, hidden 32, grid
  8 x 8 at 32 px), batch 128, 600 steps (1.5 epochs), Adam lr 1e-3 after 0.1 epoch; no kNN at
  the start (only BEiT's encoder is evaluated). benchmarks/cifar10_cpu.py trains it before BEiT
  and counts its time in BEiT's row.
- cifar10: vocabulary 1024, hidden 64, two stages of two blocks (grid 8 x 8 at 32 px), batch 256,
  200 epochs, lr 1e-3 with cosine decay.
    python -m jssl.main --config configs/dvae.py:cifar10 --workdir runs/dvae-cifar10
- imagenet: vocabulary 8192 (DALL-E's), hidden 64, four stride-2 stages of two blocks (grid
  14 x 14 at 224 px, one token per 16 x 16 patch as BEiT's ViT-B/16 needs), batch 512,
  AdamW lr 1e-4 (DALL-E's peak, no scaling), 30 epochs, ImageNet mean / std. DALL-E's own dVAE
  has a grid of 32 x 32 at 256 px (8 x 8 cells) and BEiT feeds it a second 112 px view; here the
  tokenizer reads BEiT's 224 px view directly. Expect codebook perplexity in the thousands.
    python -m jssl.main --config configs/dvae.py:imagenet --workdir runs/dvae-in1k

The KL weight is that of the mean per-cell KL against the mean per-value squared error; DALL-E's
beta = 6.6 on its sums corresponds to about 6.6 * cells / values = 6.6 / (3 * 16^2) ~ 0.009 at the
ImageNet preset (its likelihood is not an MSE, so the match is only in order of magnitude).
BEiT reads the tokenizer from the workdir: `--config.method.tokenizer_workdir=runs/dvae-tiny`.
"""


import ml_collections

from jssl import config_files


def _common():
  return config_files.sibling(__file__, 'common')


def dvae_model(common, vocab_size, hidden, num_down, blocks, imagenet=False):
  mean, std = ((common.IMAGENET_MEAN, common.IMAGENET_STD) if imagenet else
               (common.CIFAR10_MEAN, common.CIFAR10_STD))
  return ml_collections.ConfigDict(dict(
      name='dvae', vocab_size=vocab_size, hidden=hidden, num_down=num_down, blocks=blocks,
      dtype='float32', conv_weight_grad='auto', mean=mean, std=std))


def _data(common, source, size):
  d = common.data_block('mae', source, source, size)  # crop + flip, one view
  d.augment.update(image_size=size, scale=(0.5, 1.0) if size <= 64 else (0.35, 1.0))
  return d


def get_config(arg=None):
  common = _common()
  preset = arg or 'tiny'
  c = common.base('dvae', preset)
  c.method.update(tau_start=1.0, tau_final=1.0 / 16, anneal_fraction=0.8, kl_weight=0.01,
                  kl_warmup_fraction=0.2, hard=False)
  c.optim.update(name='adamw', lr=1e-3, lr_scaling='none', weight_decay=1e-4, b1=0.9, b2=0.999,
                 warmup_epochs=1.0, schedule='cosine', end_lr_factor=0.01)
  if preset == 'tiny':
    common.tiny(c)
    c.model = dvae_model(common, 256, 32, 2, 1)
    c.data = _data(common, 'embedded', 32)
    c.batch_size = 128
    c.total_epochs = 10
    c.optim.warmup_epochs = 0.5
  elif preset == 'cifar10_cpu':
    common.cifar10_cpu(c, steps=600)
    c.model = dvae_model(common, 256, 32, 2, 1)
    c.data = _data(common, 'tfds:cifar10', 32)
    c.batch_size = 128
    c.eval.update(at_start=False, linear_probe=False)
    c.optim.update(name='adamw', lr=1e-3, weight_decay=1e-4, warmup_epochs=0.1)
  elif preset == 'cifar10':
    common.cifar10(c)
    c.model = dvae_model(common, 1024, 64, 2, 2)
    c.data = _data(common, 'tfds:cifar10', 32)
    c.batch_size = 256
    c.total_epochs = 200
    c.eval.linear_probe = False
    c.optim.update(name='adamw', lr=1e-3, warmup_epochs=2.0)
  elif preset == 'imagenet':
    common.imagenet(c)
    c.model = dvae_model(common, 8192, 64, 4, 2, imagenet=True)
    c.data = _data(common, 'tfds:imagenet2012', 224)
    c.data.eval_split = 'validation'
    c.batch_size = 512
    c.total_epochs = 30
    c.eval.linear_probe = False
    c.method.kl_weight = 0.009
    c.optim.update(name='adamw', lr=1e-4, warmup_epochs=1.0)
  else:
    raise ValueError(f"unknown preset {preset!r} for configs/dvae.py; choose 'tiny', "
                     "'cifar10_cpu', 'cifar10' or 'imagenet'")
  return c
