"""Backbone weights as files: safetensors with torchvision / timm names, or jssl's own msgpack.

A backbone is a module built by `jssl.models.from_config` from an architecture (a `config.model`
dict) and its variables `{'params', 'batch_stats'}` in jssl's tree. Two formats:
- 'safetensors': one tensor per leaf, named and laid out as PyTorch expects: ResNets with
  torchvision's names (`conv1.weight`, `bn1.running_mean`, `layer1.0.downsample.0.weight`...),
  ViTs with timm's (`patch_embed.proj.weight`, `blocks.0.attn.qkv.weight`, `norm.bias`...);
  conv kernels HWIO -> OIHW, Dense kernels `[in, out]` -> `[out, in]`. Two kinds of tensor
  are derived, not jssl leaves: BatchNorm's `num_batches_tracked` (0) and the ViT's
  `pos_embed` (jssl's fixed sin-cos table at the sidecar's input size, CLS row zero).
- 'msgpack': `flax.serialization.msgpack_serialize` of the variables, jssl's names.
A part with no torchvision / timm name (the dVAE encoder) fails for safetensors, naming it.

`save(path, module, variables, info, fmt)` writes the file and `path + '.json'` (the sidecar:
`info` plus the format, the naming, the feature size, the key map and what a PyTorch user must
build); `load_backbone(path) -> (module, variables, info)` reads either format back;
`apply_features(module, variables, images, info)` gives the pooled features of images in [0, 1].
"""

import json
import os
import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import serialization

from jssl.models import build, dvae, pos_embed, resnet, vit

FORMATS = ('safetensors', 'msgpack')
_LEAF = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias', 'mean': 'running_mean',
         'var': 'running_var'}


class ExportError(ValueError):
  """A backbone, file or sidecar that cannot be exported or loaded (the message names it)."""


# --------------------------------------------------------------------------------- the names

def _resnet_name(path: str):
  """jssl ResNet leaf path ('stage1_block1/conv1/kernel') -> torchvision name, or None."""
  m = re.fullmatch(r'stem_(conv|bn)/(\w+)', path)
  if m:
    return f'{m[1]}1.{_LEAF[m[2]]}'
  m = re.fullmatch(r'stage(\d+)_block(\d+)/(\w+)/(\w+)', path)
  if not m:
    return None
  part = {'proj_conv': 'downsample.0', 'proj_bn': 'downsample.1'}.get(m[3], m[3])
  return f'layer{m[1]}.{int(m[2]) - 1}.{part}.{_LEAF[m[4]]}'


def _vit_name(path: str):
  """jssl ViT leaf path ('block0/attn/qkv/kernel') -> timm name, or None."""
  fixed = {'cls': 'cls_token', 'mask_token': 'mask_token', 'registers': 'reg_token'}
  if path in fixed:
    return fixed[path]
  m = re.fullmatch(r'patch_embed/(kernel|bias)', path)
  if m:
    return f'patch_embed.proj.{_LEAF[m[1]]}'
  m = re.fullmatch(r'block(\d+)/(ls[12])/scale', path)
  if m:
    return f'blocks.{m[1]}.{m[2]}.gamma'
  m = re.fullmatch(r'block(\d+)/((?:norm[12])|(?:attn/(?:qkv|proj))|(?:mlp/fc[12]))/(\w+)', path)
  if m:
    return f'blocks.{m[1]}.{m[2].replace("/", ".")}.{_LEAF[m[3]]}'
  m = re.fullmatch(r'norm/(scale|bias)', path)
  return f'norm.{_LEAF[m[1]]}' if m else None


def naming(module) -> str:
  """The torch naming of `module`'s safetensors file ('torchvision' / 'timm')."""
  if isinstance(module, resnet.ResNet):
    return 'torchvision'
  if isinstance(module, vit.ViT):
    return 'timm'
  raise ExportError(f'{type(module).__name__} has no torchvision or timm equivalent; '
                    'export it with --format msgpack')


def _paths(tree) -> dict:
  """`{'collection/module/.../leaf': array}` of a variables tree."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {'/'.join(str(k.key) for k in p): v for p, v in flat}


def key_map(module, variables) -> dict:
  """`{torch name: jssl path ('params/stem_conv/kernel')}` of every leaf, a bijection."""
  rename = _resnet_name if naming(module) == 'torchvision' else _vit_name
  out = {}
  for path in _paths(variables):
    name = rename(path.split('/', 1)[1])
    if name is None:
      raise ExportError(f'{path} has no {naming(module)} name; export with --format msgpack')
    if name in out:
      raise ExportError(f'{path} and {out[name]} both map to {name!r}')
    out[name] = path
  return out


def to_torch(path: str, value) -> np.ndarray:
  """A jssl leaf in torch's layout: kernels HWIO -> OIHW, `[in, out]` -> `[out, in]`."""
  a = np.asarray(value)
  if path.endswith('/kernel'):
    a = np.transpose(a, (3, 2, 0, 1)) if a.ndim == 4 else a.T
  return np.ascontiguousarray(a)


def from_torch(path: str, value) -> np.ndarray:
  """The inverse of `to_torch`."""
  a = np.asarray(value)
  if path.endswith('/kernel'):
    a = np.transpose(a, (2, 3, 1, 0)) if a.ndim == 4 else a.T
  return np.ascontiguousarray(a)


def derived(module, names, input_size: int) -> dict:
  """The tensors torch expects that are no jssl leaf: BatchNorm's `num_batches_tracked`, the
  ViT's `pos_embed` at `input_size` (fixed sin-cos, the CLS position zero)."""
  if isinstance(module, resnet.ResNet):
    return {n[:-len('running_mean')] + 'num_batches_tracked': np.zeros((), np.int64)
            for n in names if n.endswith('.running_mean')}
  if input_size % module.patch_size:
    raise ExportError(f'input size {input_size} is not a multiple of the ViT patch size '
                      f'{module.patch_size}')
  g = input_size // module.patch_size
  table = pos_embed.sincos_2d(module.width, g, g)
  prefix = int(module.class_token) + int(getattr(module, 'num_registers', 0))
  table = np.concatenate([np.zeros((prefix, module.width), np.float32), table])  # no positions
  return {'pos_embed': table[None]}


# ---------------------------------------------------------------------------- the PyTorch side

def _same_padding() -> str:
  return ('the stride-2 3x3 convolutions (conv1 of a basic block, conv2 of a bottleneck, the '
          'first block of stages 2+) pad like XLA "SAME": total = max((ceil(H/2) - 1) * 2 + 3 - '
          'H, 0), total // 2 before, the rest after (even H: 0 before, 1 after); give them '
          'padding=0 and pad their input so; every other convolution pads like torchvision')


def torch_recipe(module, input_size: int) -> dict:
  """What a PyTorch user builds to load the safetensors file with strict=True."""
  if isinstance(module, resnet.ResNet):
    cifar = module.stem == 'cifar'
    return {
        'module': 'torchvision.models.resnet.ResNet layout, no fc (features: the pooled [N, F])',
        'block': 'BasicBlock' if module.block == 'basic' else 'Bottleneck',
        'layers': list(module.stage_sizes),
        'widths': [module.width * 2**i for i in range(len(module.stage_sizes))],
        'stem': {'kernel_size': 3 if cifar else 7, 'stride': 1 if cifar else 2,
                 'padding': 1 if cifar else 3, 'maxpool': not cifar},
        'batchnorm_eps': 1e-5, 'padding': _same_padding()}
  pool = {'cls': 'token', 'mean': 'avg', 'none': ''}[module.pool]
  return {
      'module': 'timm.models.vision_transformer.VisionTransformer',
      'kwargs': {'img_size': input_size, 'patch_size': module.patch_size,
                 'embed_dim': module.width, 'depth': module.depth, 'num_heads': module.num_heads,
                 'mlp_ratio': module.mlp_ratio, 'qkv_bias': True,
                 'class_token': module.class_token, 'global_pool': pool, 'fc_norm': False,
                 'num_classes': 0, 'init_values': module.layerscale_init,
                 'reg_tokens': int(getattr(module, 'num_registers', 0))},
      'pos_embed': f'fixed 2-D sin-cos for {input_size} px (CLS row zero), stored as the '
                   'learned table: another input size needs another table',
      'extra_keys': ['mask_token'] if module.use_mask_token else [],
      'layernorm_eps': 1e-6}


# ------------------------------------------------------------------------------ the module side

def module_of(architecture: dict, use_mask_token: bool = False):
  """The backbone module of a `config.model` dict (the dVAE: its encoder)."""
  cfg = ml_collections.ConfigDict(architecture)
  module = build.from_config(cfg, use_mask_token=use_mask_token)
  if isinstance(module, dvae.DVAE):
    return dvae.DVAEEncoder(module.vocab_size, module.hidden, module.num_down, module.blocks,
                            module.dtype, module.conv_general_dilated)
  return module


def _raw(module, variables, x):
  if isinstance(module, dvae.DVAEEncoder):
    return module.apply(variables, x)[1]
  out = module.apply(variables, x, train=False)
  return out['pooled'] if isinstance(out, dict) else out


def apply_features(module, variables, images, info: dict):
  """Pooled features `[N, F]` of images `[N, H, W, 3]` in [0, 1] (normalized by info's mean /
  std, as the run's `method.features` does)."""
  x = ((jnp.asarray(images, jnp.float32) - jnp.asarray(info['mean'], jnp.float32))
       / jnp.asarray(info['std'], jnp.float32))
  return _raw(module, variables, x)


def expected(module, input_size: int) -> dict:
  """The variables' shapes (`jax.ShapeDtypeStruct`s) of `module`, batch_stats `{}` if none."""
  x = jnp.zeros((1, input_size, input_size, 3), jnp.float32)
  if isinstance(module, dvae.DVAEEncoder):
    shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x))
  else:
    shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), x, train=False))
  return {'params': shapes['params'], 'batch_stats': shapes.get('batch_stats', {})}


def check_variables(module, variables, input_size: int, what: str) -> None:
  """Raises ExportError naming the first leaf `variables` lacks, has extra or shapes wrongly."""
  want, got = _paths(expected(module, input_size)), _paths(variables)
  for path in sorted(set(want) | set(got)):
    if path not in got:
      raise ExportError(f'{what}: {path} is missing')
    if path not in want:
      raise ExportError(f'{what}: {path} is not part of the backbone')
    if tuple(np.shape(got[path])) != tuple(want[path].shape):
      raise ExportError(f'{what}: {path} has shape {tuple(np.shape(got[path]))}, the '
                        f'architecture wants {tuple(want[path].shape)}')


def feature_dim(module, input_size: int) -> int:
  x = jax.ShapeDtypeStruct((1, input_size, input_size, 3), jnp.float32)
  shapes = expected(module, input_size)
  out = jax.eval_shape(lambda v, x: _raw(module, v, x), shapes, x)
  return int(out.shape[-1])


# ----------------------------------------------------------------------------- writing, reading

def _write_atomic(path: str, data: bytes) -> None:
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(data)
  os.replace(tmp, path)


def tensors(module, variables, input_size: int) -> tuple[dict, dict]:
  """`({torch name: array}, {torch name: jssl path})` of the safetensors file."""
  names = key_map(module, variables)
  flat = _paths(variables)
  out = {n: to_torch(p, flat[p]) for n, p in names.items()}
  out.update(derived(module, names, input_size))
  return out, names


def save(path: str, module, variables, info: dict, fmt: str = 'safetensors') -> dict:
  """Writes `path` and its sidecar `path + '.json'`; returns the sidecar."""
  if fmt not in FORMATS:
    raise ExportError(f'unknown format {fmt!r}; choose one of {", ".join(FORMATS)}')
  size = int(info['input_size'])
  variables = {'params': variables.get('params', {}),
               'batch_stats': variables.get('batch_stats') or {}}
  check_variables(module, variables, size, 'the backbone')
  sidecar = dict(info, format=fmt, use_mask_token=bool(getattr(module, 'use_mask_token', False)),
                 feature_dim=feature_dim(module, size))
  if fmt == 'msgpack':
    host = jax.tree.map(np.asarray, variables)
    sidecar.update(key_naming='jssl', keys=sorted(_paths(host)))
    data = serialization.msgpack_serialize(host)
  else:
    from safetensors import numpy as st  # pylint: disable=g-import-not-at-top
    arrays, names = tensors(module, variables, size)
    sidecar.update(key_naming=naming(module), keys=names,
                   derived_keys=sorted(set(arrays) - set(names)),
                   torch=torch_recipe(module, size))
    data = st.save(arrays, metadata={'format': 'pt'})
  _write_atomic(path, data)
  _write_atomic(path + '.json', (json.dumps(sidecar, indent=1) + '\n').encode())
  return sidecar


def read_sidecar(path: str) -> dict:
  side = path + '.json'
  if not os.path.isfile(side):
    raise ExportError(f'{side}: no such file (the sidecar `python -m jssl.export` writes next '
                      f'to {os.path.basename(path)})')
  try:
    with open(side) as f:
      info = json.load(f)
  except (OSError, ValueError) as e:
    raise ExportError(f'{side}: not a readable JSON file ({e})') from None
  for key in ('format', 'architecture', 'input_size', 'mean', 'std'):
    if key not in info:
      raise ExportError(f'{side}: no {key!r} key')
  if info['format'] not in FORMATS:
    raise ExportError(f'{side}: format {info["format"]!r} is not one of {", ".join(FORMATS)}')
  return info


def _from_safetensors(path: str, module, info: dict) -> dict:
  from safetensors import numpy as st  # pylint: disable=g-import-not-at-top
  try:
    arrays = st.load_file(path)
  except Exception as e:  # noqa: BLE001 (safetensors' own error type, OSError)
    raise ExportError(f'{path}: not a safetensors file ({str(e).splitlines()[0][:200]})') from None
  size = int(info['input_size'])
  shapes = expected(module, size)
  names = key_map(module, shapes)
  extra = set(arrays) - set(names) - set(derived(module, names, size))
  missing = set(names) - set(arrays)
  if missing or extra:
    raise ExportError(f'{path}: tensors missing {sorted(missing)[:5]}, unexpected '
                      f'{sorted(extra)[:5]}')
  flat = {names[n]: from_torch(names[n], arrays[n]) for n in names}
  tree = jax.tree_util.tree_map_with_path(
      lambda p, _: flat['/'.join(str(k.key) for k in p)], shapes)
  return tree


def load_backbone(path: str):
  """`(module, variables, info)` of a file written by `save` (either format).

  `apply_features(module, variables, images, info)` then gives the run's backbone features;
  or call `module.apply(variables, normalized_images, train=False)` directly (ViT: a dict).
  """
  info = read_sidecar(path)
  if not os.path.isfile(path):
    raise ExportError(f'{path}: no such file')
  module = module_of(info['architecture'], bool(info.get('use_mask_token', False)))
  if info['format'] == 'msgpack':
    with open(path, 'rb') as f:
      try:
        variables = serialization.msgpack_restore(f.read())
      except Exception as e:  # noqa: BLE001 (msgpack raises several kinds)
        raise ExportError(f'{path}: not a msgpack file ({type(e).__name__})') from None
    variables = {'params': variables.get('params', {}),
                 'batch_stats': variables.get('batch_stats') or {}}
  else:
    variables = _from_safetensors(path, module, info)
  check_variables(module, variables, int(info['input_size']), path)
  return module, variables, info
