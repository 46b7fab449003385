"""Shared defaults of every jssl config; the method files (simclr.py, byol.py) start from here.

`base(method, preset)` returns the full ConfigDict with every key a run reads:
  seed, batch_size, total_epochs (or total_steps > 0, which wins), steps_per_epoch (0: the
  training split's size // batch_size),
  model:      backbone name ('resnet_tiny', 'resnet18', 'resnet50', ...), width, stem
              ('cifar' | 'imagenet'), stage_sizes (() = the name's), dtype ('float32' |
              'bfloat16': compute dtype, params stay float32), conv_weight_grad ('auto': the
              per-tap weight gradient of jssl.models.conv on CPU, XLA's elsewhere; 'xla';
              'per_tap'), remat (recompute each block in the backward pass: less memory),
              mean / std (input normalization),
  method:     name (+ the method's own keys, set by the method file),
  optim:      name ('lars' | 'sgd' | 'adamw' | 'lamb'), lr, lr_scaling ('linear': lr * bs / 256,
              'sqrt': lr * sqrt(bs), 'none'), weight_decay, momentum, nesterov,
              trust_coefficient, trust_clip (LARS: cap the trust-ratio step at the SGD step,
              solo-learn's clip_lr), warmup_epochs, schedule ('cosine' | 'constant'), end_lr_factor,
              clip_norm (0: off), b1, b2, eps,
  checkpoint: every_steps, keep, use_async,
  log:        every_steps (progress line and metrics.jsonl), tensorboard,
  eval:       the kNN monitor every `every_epochs` (0: off), before training when `at_start`
              and at the end (`final`); linear_probe at the end when True (jssl.eval's block,
              plus batch_size, at_start, final),
  data:       jssl.data's block (source, recipe, augment...).
"""

import ml_collections

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def vit_model(name: str, patch_size: int, width: int = 0, depth: int = 0, num_heads: int = 0,
              pool: str = 'cls', imagenet: bool = False) -> ml_collections.ConfigDict:
  """A `config.model` block for a ViT (jssl.models.from_config; 0 = the name's width / depth /
  heads), with CIFAR-10's or ImageNet's input mean / std."""
  mean, std = (IMAGENET_MEAN, IMAGENET_STD) if imagenet else (CIFAR10_MEAN, CIFAR10_STD)
  return ml_collections.ConfigDict(dict(
      name=name, patch_size=patch_size, width=width, depth=depth, num_heads=num_heads,
      pool=pool, drop_path_rate=0.0, layerscale_init=0.0, dtype='float32', attention_impl='',
      remat=False, mean=mean, std=std))


def data_block(recipe: str, source: str = 'embedded', eval_source: str = 'embedded',
               image_size: int = 32) -> ml_collections.ConfigDict:
  """jssl.data's block with `recipe` and all its parameters spelled out (so each can be set
  from the command line, e.g. --config.data.augment.scale='(0.2,1.0)')."""
  from jssl.data import augment_recipes  # pylint: disable=g-import-not-at-top (no TensorFlow)
  from jssl.data import config as data_config  # pylint: disable=g-import-not-at-top
  d = data_config.data_config()
  d.source, d.eval_source, d.image_size, d.recipe = source, eval_source, image_size, recipe
  d.augment = ml_collections.ConfigDict(augment_recipes.recipe_defaults(recipe))
  eval_augment = augment_recipes.recipe_defaults(d.eval_recipe)
  eval_augment['image_size'] = image_size
  if image_size <= 64:  # CIFAR-sized images are evaluated whole
    eval_augment['crop_pct'] = 1.0
  d.eval_augment = ml_collections.ConfigDict(eval_augment)
  return d


def eval_block() -> ml_collections.ConfigDict:
  try:
    from jssl.eval import evaluate  # pylint: disable=g-import-not-at-top
    e = evaluate.eval_config()
  except ImportError:  # jssl.eval not installed: the keys the engine reads
    e = ml_collections.ConfigDict(dict(every_epochs=10, knn_k=(20, 200), knn_temperature=0.07,
                                       knn_batch_size=256, max_train_examples=0,
                                       linear_probe=False, collapse_every_steps=50,
                                       collapse_examples=512))
  e.batch_size = 512  # feature extraction batch
  e.at_start = False  # kNN of the random-init network before training (step 0 of the curves)
  e.final = True  # kNN (and the probe when linear_probe) at the end of training
  return e


def base(method: str, preset: str) -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.method = ml_collections.ConfigDict({'name': method})
  c.preset = preset
  c.seed = 0
  c.batch_size = 256
  c.total_epochs = 100
  c.total_steps = 0
  c.steps_per_epoch = 0
  c.model = ml_collections.ConfigDict(dict(
      name='resnet18', width=64, stem='cifar', stage_sizes=(), dtype='float32',
      conv_weight_grad='auto', remat=False, mean=CIFAR10_MEAN, std=CIFAR10_STD))
  c.optim = ml_collections.ConfigDict(dict(
      name='lars', lr=0.3, lr_scaling='linear', weight_decay=1e-6, momentum=0.9, nesterov=False,
      trust_coefficient=1e-3, trust_clip=False, warmup_epochs=10.0, schedule='cosine',
      end_lr_factor=0.0, clip_norm=0.0, b1=0.9, b2=0.999, eps=1e-8))
  c.checkpoint = ml_collections.ConfigDict(dict(every_steps=1000, keep=3, use_async=True))
  c.log = ml_collections.ConfigDict(dict(every_steps=50, tensorboard=True))
  c.eval = eval_block()
  c.data = data_block('simclr_cifar')
  return c


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The CPU preset: a narrow one-block-per-stage ResNet (8-16-32-64) on the embedded CIFAR-10
  subset, batch 128, 4 epochs: sized for ~5 minutes on 2 CPU cores (XLA:CPU's convolution
  gradients cost ~8x the forward pass, so wider nets or more steps do not fit)."""
  c.model.update(name='resnet_tiny', width=8, stem='cifar')
  c.batch_size = 128
  c.total_epochs = 4
  c.optim.update(warmup_epochs=0.5)
  c.checkpoint.every_steps = 100
  c.log.every_steps = 10
  c.eval.every_epochs = 2
  c.eval.at_start = True
  c.eval.knn_k = (20, 200)
  return c


def cifar10(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """ResNet-18 with the CIFAR stem at 32 px, batch 512, 1000 epochs, LARS with eta 0.02 and
  the clipped trust ratio (solo-learn's set-up)."""
  c.model.update(name='resnet18', width=64, stem='cifar')
  c.data.source, c.data.eval_source = 'tfds:cifar10', 'tfds:cifar10'
  c.batch_size = 512
  c.total_epochs = 1000
  # solo-learn's LARS for CIFAR: eta 0.02 with clip_lr (the step capped at the SGD step),
  # biases and norms excluded.
  c.optim.update(name='lars', warmup_epochs=10.0, weight_decay=1e-5, trust_coefficient=0.02,
                 trust_clip=True)
  c.checkpoint.every_steps = 2000
  c.log.every_steps = 50
  c.eval.every_epochs = 50
  c.eval.linear_probe = True
  return c


def cifar10_cpu(c: ml_collections.ConfigDict, steps: int = 2300) -> ml_collections.ConfigDict:
  """The 30-minute CPU budget on the full CIFAR-10: the one-block-per-stage
  ResNet at widths 16-32-64-128 (CIFAR stem, 0.7M parameters), batch 256, `total_steps` sized
  to ~30 min of training on 2 CPU cores, kNN (k = 20, 200) on all 50k training images against
  the 10k test images before training (the random-init baseline) and at the end. The data
  source is cifar10's (tfds:cifar10, a download); for CIFAR-10 as JPEG class folders in DIR
  pass --config.data.source=folder:DIR --config.data.eval_source=folder:DIR."""
  cifar10(c)
  c.model.update(name='resnet_tiny', width=16, stem='cifar')
  c.batch_size = 256
  c.total_steps = steps
  # The short run keeps optax's LARS (eta 1e-3, no clip): at 150 steps it reached kNN 35.4%
  # against 32.8% for solo-learn's clipped eta 0.02 at lr 0.4 (SimCLR, 150 steps).
  c.optim.update(warmup_epochs=0.5, trust_coefficient=1e-3, trust_clip=False)
  c.checkpoint.every_steps = 100
  c.log.every_steps = 10
  c.eval.update(every_epochs=0, at_start=True, final=True, linear_probe=False,
                knn_k=(20, 200), max_train_examples=0)
  return c


def cpu_views(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The cifar10_cpu views of a two-view recipe: crops of (0.2, 1) of the image resized to 24 px
  (a 24 px step costs about 0.56x a 32 px one, and such crops show objects at about their size in
  the whole 32 px test image, which the kNN evaluation reads unchanged)."""
  c.data.augment.update(image_size=24, scale=(0.2, 1.0))
  return c


def imagenet(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """ResNet-50 at 224 px, batch 4096, LARS with warm-up and cosine decay."""
  c.model.update(name='resnet50', width=64, stem='imagenet', mean=IMAGENET_MEAN,
                 std=IMAGENET_STD)
  c.data.source, c.data.eval_source = 'tfds:imagenet2012', 'tfds:imagenet2012'
  c.data.eval_split = 'validation'
  c.batch_size = 4096
  c.checkpoint.every_steps = 5000
  c.log.every_steps = 100
  c.eval.every_epochs = 0
  c.eval.max_train_examples = 100_000
  c.eval.linear_probe = True
  return c
