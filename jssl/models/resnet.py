"""ResNet backbones (He et al., 2016) returning pooled features, with an ImageNet or CIFAR stem.

`ResNet(stage_sizes, block, width, stem)(x, train)` maps `[N, H, W, C]` images (already
normalized) to `[N, F]` features after global average pooling; there is no classifier. The
stage widths are `width * 2**i` (times 4 at the output of a bottleneck block).

- stem 'imagenet': 7x7/2 conv, BN, ReLU, 3x3/2 max-pool (224 px inputs);
- stem 'cifar': 3x3/1 conv, BN, ReLU, no pooling (32 px inputs), as in SimCLR's CIFAR runs.

Parameters are float32; `dtype` sets the compute dtype (bf16 activations, float32 params).
BatchNorm uses batch statistics when `train=True`: under `jax.jit` over a batch sharded across
devices those are statistics of the global batch.

`remat=True` recomputes each residual block in the backward pass (`jssl.models.remat`): only
the blocks' inputs are kept from the forward pass, for about one more forward pass of compute;
the values, gradients and BatchNorm statistics are the same.
"""

import functools
from typing import Any, Sequence

import flax.linen as nn
import jax.numpy as jnp

from jssl.models import remat as remat_lib

STAGES = {
    'resnet_tiny': ((1, 1, 1, 1), 'basic'),
    'resnet18': ((2, 2, 2, 2), 'basic'),
    'resnet34': ((3, 4, 6, 3), 'basic'),
    'resnet50': ((3, 4, 6, 3), 'bottleneck'),
    'resnet101': ((3, 4, 23, 3), 'bottleneck'),
}


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with a residual connection."""
  features: int
  strides: int = 1
  dtype: Any = jnp.float32
  conv_general_dilated: Any = None  # None: lax's; see jssl.models.conv

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             conv_general_dilated=self.conv_general_dilated)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    y = conv(self.features, (3, 3), self.strides, name='conv1')(x)
    y = nn.relu(norm(name='bn1')(y))
    y = conv(self.features, (3, 3), name='conv2')(y)
    y = norm(scale_init=nn.initializers.zeros, name='bn2')(y)
    if x.shape != y.shape:
      x = conv(self.features, (1, 1), self.strides, name='proj_conv')(x)
      x = norm(name='proj_bn')(x)
    return nn.relu(x + y)


class BottleneckBlock(nn.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand (x4), with a residual connection."""
  features: int
  strides: int = 1
  dtype: Any = jnp.float32
  conv_general_dilated: Any = None  # None: lax's; see jssl.models.conv

  @nn.compact
  def __call__(self, x, train: bool):
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             conv_general_dilated=self.conv_general_dilated)
    norm = functools.partial(nn.BatchNorm, use_running_average=not train, momentum=0.9,
                             epsilon=1e-5, dtype=self.dtype)
    y = nn.relu(norm(name='bn1')(conv(self.features, (1, 1), name='conv1')(x)))
    y = conv(self.features, (3, 3), self.strides, name='conv2')(y)
    y = nn.relu(norm(name='bn2')(y))
    y = conv(self.features * 4, (1, 1), name='conv3')(y)
    y = norm(scale_init=nn.initializers.zeros, name='bn3')(y)
    if x.shape != y.shape:
      x = conv(self.features * 4, (1, 1), self.strides, name='proj_conv')(x)
      x = norm(name='proj_bn')(x)
    return nn.relu(x + y)


class ResNet(nn.Module):
  """A ResNet trunk: stem, 4 (or len(stage_sizes)) stages, global average pool -> `[N, F]`."""
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  block: str = 'basic'
  width: int = 64
  stem: str = 'imagenet'
  dtype: Any = jnp.float32
  conv_general_dilated: Any = None  # None: lax's; see jssl.models.conv
  remat: bool = False  # recompute each block in the backward pass (module docstring)

  @nn.compact
  def __call__(self, x, train: bool = True):
    block_cls = {'basic': BasicBlock, 'bottleneck': BottleneckBlock}[self.block]
    conv = functools.partial(nn.Conv, use_bias=False, dtype=self.dtype,
                             conv_general_dilated=self.conv_general_dilated)
    x = jnp.asarray(x, self.dtype)
    if self.stem == 'imagenet':
      x = conv(self.width, (7, 7), 2, padding=[(3, 3), (3, 3)], name='stem_conv')(x)
    elif self.stem == 'cifar':
      x = conv(self.width, (3, 3), 1, name='stem_conv')(x)
    else:
      raise ValueError(f"stem must be 'imagenet' or 'cifar', got {self.stem!r}")
    x = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                     dtype=self.dtype, name='stem_bn')(x)
    x = nn.relu(x)
    if self.stem == 'imagenet':
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for i, n_blocks in enumerate(self.stage_sizes):
      for j in range(n_blocks):
        strides = 2 if i > 0 and j == 0 else 1
        args = (self.width * 2**i, strides, self.dtype, self.conv_general_dilated)
        x = remat_lib.block_call(self.remat, block_cls, args, f'stage{i + 1}_block{j + 1}', x,
                                 train)
    return jnp.mean(x, axis=(1, 2))


def resnet(name: str = 'resnet18', *, width: int = 64, stem: str = 'imagenet',
           stage_sizes: Sequence[int] = (), dtype: Any = jnp.float32,
           conv_general_dilated: Any = None, remat: bool = False) -> ResNet:
  """A named ResNet ('resnet_tiny', 'resnet18', 'resnet34', 'resnet50', 'resnet101').

  `stage_sizes` (non-empty) overrides the named depth; 'resnet_tiny' is one basic block per
  stage (with width 32: 32-64-128-256 channels), small enough to train on a CPU.
  `conv_general_dilated`: None (lax's) or `jssl.models.conv.conv_general_dilated` (a faster
  weight gradient on XLA:CPU). `remat`: recompute each block in the backward pass.
  """
  if name not in STAGES:
    raise ValueError(f'unknown backbone {name!r}; choose one of {sorted(STAGES)}')
  sizes, block = STAGES[name]
  return ResNet(stage_sizes=tuple(stage_sizes) or sizes, block=block, width=width, stem=stem,
                dtype=dtype, conv_general_dilated=conv_general_dilated, remat=remat)


def feature_dim(model: ResNet) -> int:
  """The size of the pooled features of `model`."""
  last = model.width * 2**(len(model.stage_sizes) - 1)
  return last * (4 if model.block == 'bottleneck' else 1)
