"""End-to-end fine-tuning (`python -m jssl.finetune`) of a pre-training run's backbone.

    python -m jssl.finetune --config configs/finetune.py --workdir runs/ft-mae-tiny \
        --config.pretrain_workdir=runs/mae-tiny
    python -m jssl.finetune --config configs/finetune.py --workdir runs/ft-scratch-tiny \
        --config.pretrain_workdir=runs/mae-tiny --from_scratch

The architecture, data (train / eval splits, eval recipe) and input normalization are the
pre-training run's (its config.json); `data.source` / `data.eval_source` / splits override them
when set. A rerun of the same command resumes from the newest checkpoint in the workdir
(`checkpoint.every_steps`); the keys that may change between a run and its resume are
pre-training's (length, eval, log, checkpoint cadence). Presets:
- default ('cifar'): a small labelled budget of 100 images per class at 32 px, batch 128,
  50 epochs of that budget, AdamW (0.9, 0.999) lr 1e-3 * bs / 256, wd 0.05, layer decay 0.75,
  5 warm-up epochs + cosine, label smoothing 0.1, drop path 0.1.
- imagenet: MAE's ViT-B fine-tuning recipe (He et al., 2022) without mixup / cutmix / RandAugment
  (not implemented): batch 1024, 100 epochs, lr 5e-4 * bs / 256, layer decay 0.65, wd 0.05, drop
  path 0.1, label smoothing 0.1, 5 warm-up epochs; `labels_per_class=13` is ImageNet's 1% budget
  (0: every label; the subset is held in host memory, so 0 needs ~100 GB at 256 px).
"""

import ml_collections


def get_config(arg=None):
  preset = arg or 'cifar'
  c = ml_collections.ConfigDict()
  c.preset = preset
  c.pretrain_workdir = ''  # the jssl.main run to fine-tune (its config.json and checkpoints/)
  c.checkpoint_step = 0  # 0: the newest checkpoint
  c.from_scratch = False  # True: the same architecture from random init (the baseline)
  c.seed = 0
  c.labels_per_class = 100  # the labelled budget (0: every training example)
  c.batch_size = 128
  c.total_epochs = 50.0  # epochs of the labelled budget
  c.total_steps = 0  # > 0 wins over total_epochs
  c.eval = ml_collections.ConfigDict(dict(every_epochs=10.0,  # 0: only at the end
                                         batch_size=256))
  c.log = ml_collections.ConfigDict(dict(every_steps=20, tensorboard=True))
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=500, keep=2, use_async=True))
  c.label_smoothing = 0.1
  c.drop_path_rate = 0.1  # ViT only
  c.pool = ''  # ViT: 'cls' | 'mean' | '' (the pre-training run's)
  c.optim = ml_collections.ConfigDict(dict(  # jssl.train.optim, + layer_decay
      name='adamw', schedule='cosine', lr=1e-3, lr_scaling='linear', layer_decay=0.75, weight_decay=0.05, b1=0.9, b2=0.999,
      eps=1e-8, warmup_epochs=5.0, end_lr_factor=0.0, clip_norm=0.0))
  c.data = ml_collections.ConfigDict(dict(
      source='', eval_source='', train_split='', eval_split='',
      crop_scale=(0.35, 1.0), crop_ratio=(3 / 4, 4 / 3), flip_p=0.5,
      store_size=0))  # px of the decoded labelled images (0: view size, or size / 0.875 > 64 px)
  if preset == 'cifar':
    pass
  elif preset == 'imagenet':
    c.labels_per_class = 13
    c.batch_size = 1024
    c.total_epochs = 100.0
    c.eval.every_epochs = 10.0
    c.optim.update(lr=5e-4, layer_decay=0.65, warmup_epochs=5.0)
    c.data.crop_scale = (0.08, 1.0)
  else:
    raise ValueError(f"unknown preset {preset!r} for configs/finetune.py; choose 'cifar' or "
                     "'imagenet'")
  return c
