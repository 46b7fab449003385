"""`python -m jssl.export` and `jssl.models.load_backbone`: run folders made without training
(a shrunk config.json and a checkpoint of random weights), both formats, the torchvision / timm
names as a bijection, and (slow, where torch is installed) the same features in PyTorch."""

import importlib.util
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from jssl import export as export_cli
from jssl import models
from jssl.models import dvae
from jssl.models import export as export_lib
from jssl.train import checkpoint, param_groups, runs
from jssl.train import state as state_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='', TF_CPP_MIN_LOG_LEVEL='3')
STEP = 7


def get_config(name, preset=None):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}',
                                                os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def small_data(c, size=16):
  c.data.update(source='synthetic', eval_source='synthetic', image_size=size)
  c.data.synthetic.update(image_size=size, num_examples=32, num_classes=4)
  c.data.eval_augment.update(image_size=size, crop_pct=1.0)
  c.batch_size = 8
  c.total_steps = 10
  return c


def simclr_config():
  """SimCLR tiny with a 4-8-16-32 ResNet (one basic block per stage, CIFAR stem) at 16 px."""
  c = small_data(get_config('simclr', 'tiny'))
  c.model.width = 4
  c.data.augment.image_size = 16
  return c


def bottleneck_config():
  """BYOL with a bottleneck ResNet, ImageNet stem (7x7/2 + max-pool), 2 stages, at 32 px."""
  c = small_data(get_config('byol', 'tiny'), 32)
  c.model.update(name='resnet50', width=4, stem='imagenet', stage_sizes=(1, 2))
  c.data.augment.image_size = 32
  return c


def mae_config():
  """configs/mae.py shrunk: 2 blocks, width 32, patch 4, 16 px."""
  c = small_data(get_config('mae'))
  c.model.update(width=32, depth=2, num_heads=2, patch_size=4)
  c.method.update(decoder_width=16, decoder_depth=1, decoder_num_heads=2)
  c.data.augment.image_size = 16
  return c


def simmim_config():
  """configs/simmim.py shrunk like MAE, with LayerScale and the CLS token (and a mask token)."""
  c = small_data(get_config('simmim'))
  c.model.update(width=32, depth=2, num_heads=2, patch_size=4, layerscale_init=0.1, pool='cls')
  c.data.augment.update(image_size=16, model_patch_size=4, mask_patch_size=8)
  return c


def moco_v3_vit_config():
  """MoCo v3 tiny with a 2-block ViT backbone (params['backbone'], an EMA teacher)."""
  c = small_data(get_config('moco_v3', 'tiny'))
  c.model = ml_collections.ConfigDict(dict(
      name='vit_tiny', patch_size=4, width=32, depth=2, num_heads=2, pool='cls',
      drop_path_rate=0.0, layerscale_init=0.0, dtype='float32', attention_impl='',
      mean=c.model.mean, std=c.model.std))
  c.data.augment.image_size = 16
  return c


CONFIGS = {'simclr': simclr_config, 'bottleneck': bottleneck_config, 'mae': mae_config,
           'simmim': simmim_config, 'moco_v3_vit': moco_v3_vit_config}


def randomize(tree, seed):
  """Every leaf moved by N(0, 0.5) noise (variances kept positive)."""
  leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
  rng = np.random.default_rng(seed)
  out = []
  for path, leaf in leaves:
    a = np.asarray(leaf)
    noise = rng.normal(0.0, 0.5, a.shape).astype(a.dtype)
    out.append(np.abs(a + noise) + 0.5 if str(path[-1].key) == 'var' else a + noise)
  return jax.tree_util.tree_unflatten(treedef, out)


def make_run(workdir, config, seed=1):
  """A run folder: config.json and one checkpoint (step 7) of random weights; returns the
  method and the checkpoint's state."""
  os.makedirs(workdir, exist_ok=True)
  method = runs.build_method(config, config.total_steps)
  tx, _ = param_groups.build(config.optim, config.batch_size, config.total_steps, 0,
                             getattr(method, 'optim_groups', tuple)())
  state = state_lib.create(method, tx, config.seed)
  state = state.replace(step=np.asarray(STEP, np.int32),
                        params=randomize(jax.device_get(state.params), seed),
                        batch_stats=randomize(jax.device_get(state.batch_stats), seed + 1))
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), use_async=False)
  ckpt.save(jax.device_put(state), force=True)
  ckpt.close()
  return method, state


class RunDirs:
  """The run folders of CONFIGS, each made on first use: `[name] -> (workdir, method, state)`."""

  def __init__(self, factory):
    self.factory, self.made = factory, {}

  def __getitem__(self, name):
    if name not in self.made:
      workdir = str(self.factory.mktemp(name))
      self.made[name] = (workdir,) + make_run(workdir, CONFIGS[name](), seed=len(self.made))
    return self.made[name]


@pytest.fixture(scope='module')
def run_dirs(tmp_path_factory):
  return RunDirs(tmp_path_factory)


# SimCLR (basic blocks) and MAE run by default; the others with `-m slow`
NAMES = ['simclr', 'mae'] + [pytest.param(n, marks=pytest.mark.slow)
                             for n in ('bottleneck', 'simmim', 'moco_v3_vit')]


def jitted_features(module, info):
  return jax.jit(lambda v, x: export_lib.apply_features(module, v, x, info))


def images(n, size, seed=0):
  return np.random.default_rng(seed).uniform(0, 1, (n, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize('fmt', export_lib.FORMATS)
@pytest.mark.parametrize('name', NAMES)
def test_load_backbone_gives_the_runs_features(run_dirs, tmp_path, name, fmt):
  workdir, method, state = run_dirs[name]
  out = str(tmp_path / f'{name}.{fmt}')
  sidecar = export_cli.export(workdir, out, fmt)
  on_disk = json.load(open(out + '.json'))
  assert on_disk == json.loads(json.dumps(sidecar))
  assert sidecar['method'] == method.name and sidecar['step'] == STEP
  assert sidecar['format'] == fmt and sidecar['architecture']['name'] == method_model(name)
  assert sidecar['mean'] == list(method.mean) and sidecar['std'] == list(method.std)
  module, variables, info = models.load_backbone(out)
  x = images(4, info['input_size'])
  want = np.asarray(jax.jit(method.features)(state.params, state.batch_stats, x))
  got = np.asarray(jitted_features(module, info)(variables, x))
  assert got.dtype == np.float32 and got.shape == (4, sidecar['feature_dim'])
  assert np.abs(got - want).max() <= 1e-6


def method_model(name):
  return CONFIGS[name]().model.name


@pytest.mark.parametrize('name', NAMES)
def test_names_are_a_bijection_over_the_backbone(run_dirs, tmp_path, name):
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  workdir = run_dirs[name][0]
  out = str(tmp_path / 'b.safetensors')
  sidecar = export_cli.export(workdir, out)
  variables = export_cli.backbone_variables(runs.restore_arrays(workdir))
  leaves = set(export_lib._paths(variables))  # pylint: disable=protected-access
  names = sidecar['keys']
  assert sorted(names.values()) == sorted(leaves)  # every leaf once
  arrays = load_file(out)
  assert set(arrays) == set(names) | set(sidecar['derived_keys'])
  module = export_lib.module_of(sidecar['architecture'], sidecar['use_mask_token'])
  assert export_lib.key_map(module, variables) == names
  flat = export_lib._paths(variables)  # pylint: disable=protected-access
  for torch_name, path in names.items():
    back = export_lib.from_torch(path, arrays[torch_name])
    np.testing.assert_array_equal(back, flat[path])


def test_torchvision_resnet_names_and_layouts(run_dirs, tmp_path):
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'r.safetensors')
  sidecar = export_cli.export(run_dirs['simclr'][0], out)
  t = load_file(out)
  assert sidecar['key_naming'] == 'torchvision'
  assert t['conv1.weight'].shape == (4, 3, 3, 3)  # OIHW, the CIFAR stem
  assert t['layer2.0.conv1.weight'].shape == (8, 4, 3, 3)
  assert t['layer2.0.downsample.0.weight'].shape == (8, 4, 1, 1)
  assert 'layer1.0.downsample.0.weight' not in t
  for bn in ('bn1', 'layer4.0.bn2', 'layer3.0.downsample.1'):
    assert {f'{bn}.{k}' for k in ('weight', 'bias', 'running_mean', 'running_var',
                                  'num_batches_tracked')} <= set(t)
  assert t['bn1.num_batches_tracked'].dtype == np.int64 and t['bn1.num_batches_tracked'].ndim == 0
  assert not any(k.startswith(('fc', 'projector')) for k in t)
  recipe = sidecar['torch']
  assert recipe['block'] == 'BasicBlock' and recipe['layers'] == [1, 1, 1, 1]
  assert recipe['widths'] == [4, 8, 16, 32]
  assert recipe['stem'] == {'kernel_size': 3, 'stride': 1, 'padding': 1, 'maxpool': False}


@pytest.mark.slow
def test_bottleneck_and_imagenet_stem_recipe(run_dirs, tmp_path):
  side = export_cli.export(run_dirs['bottleneck'][0], str(tmp_path / 'b.safetensors'))
  assert side['torch']['stem'] == {'kernel_size': 7, 'stride': 2, 'padding': 3, 'maxpool': True}
  assert side['torch']['block'] == 'Bottleneck' and side['torch']['widths'] == [4, 8]
  assert side['keys']['layer1.0.conv3.weight'] == 'params/stage1_block1/conv3/kernel'
  assert side['keys']['layer2.1.bn3.running_var'] == 'batch_stats/stage2_block2/bn3/var'


def test_timm_vit_names_and_layouts(run_dirs, tmp_path):
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / 'v.safetensors')
  sidecar = export_cli.export(run_dirs['mae'][0], out)
  t = load_file(out)
  assert sidecar['key_naming'] == 'timm' and sidecar['input_size'] == 16
  assert t['patch_embed.proj.weight'].shape == (32, 3, 4, 4)
  assert t['cls_token'].shape == (1, 1, 32) and t['pos_embed'].shape == (1, 17, 32)
  assert not t['pos_embed'][0, 0].any()
  assert t['blocks.1.attn.qkv.weight'].shape == (96, 32)
  assert t['blocks.0.mlp.fc1.weight'].shape == (128, 32)
  assert {'norm.weight', 'norm.bias', 'blocks.0.norm2.bias', 'blocks.0.attn.proj.bias'} <= set(t)
  assert not any(k.startswith('decoder') or 'mask_token' in k for k in t)
  assert sidecar['derived_keys'] == ['pos_embed']
  kwargs = sidecar['torch']['kwargs']
  assert kwargs['global_pool'] == 'avg' and kwargs['embed_dim'] == 32 and kwargs['depth'] == 2


@pytest.mark.slow
def test_mask_token_and_layerscale_names(run_dirs, tmp_path):
  simmim = export_cli.export(run_dirs['simmim'][0], str(tmp_path / 's.safetensors'))
  assert simmim['torch']['extra_keys'] == ['mask_token'] and simmim['use_mask_token']
  assert simmim['torch']['kwargs']['init_values'] == 0.1
  assert simmim['torch']['kwargs']['global_pool'] == 'token'
  assert 'blocks.0.ls1.gamma' in simmim['keys']


def test_backbone_is_params_not_the_teacher():
  params = {'backbone': {'w': np.ones(2)}, 'projector': {'w': np.zeros(2)}}
  arrays = {'params': params, 'batch_stats': {'backbone': {'m': np.ones(1)}},
            'method_state': {'target_params': {'backbone': {'w': np.full(2, 9.0)}}}}
  got = export_cli.backbone_variables(arrays)
  assert got == {'params': params['backbone'], 'batch_stats': {'m': np.ones(1)}}
  got = export_cli.backbone_variables({'params': {'encoder': {'w': 1}, 'decoder': {}}})
  assert got == {'params': {'w': 1}, 'batch_stats': {}}
  with pytest.raises(ValueError, match='expected "encoder" or "backbone"'):
    export_cli.backbone_variables({'params': {'other': {}}})


@pytest.mark.slow  # kept out of the default suite for its time
def test_dvae_encoder_is_msgpack_only(tmp_path):
  module = dvae.DVAEEncoder(vocab_size=8, hidden=4, num_down=1, blocks=1)
  arch = {'name': 'dvae', 'vocab_size': 8, 'hidden': 4, 'num_down': 1, 'blocks': 1,
          'dtype': 'float32'}
  variables = module.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 3), np.float32))
  info = {'architecture': arch, 'input_size': 8, 'mean': [0.5] * 3, 'std': [0.25] * 3}
  with pytest.raises(export_lib.ExportError, match='DVAEEncoder has no torchvision or timm'):
    export_lib.save(str(tmp_path / 'd.safetensors'), module, variables, info, 'safetensors')
  export_lib.save(str(tmp_path / 'd.msgpack'), module, variables, info, 'msgpack')
  m, v, i = models.load_backbone(str(tmp_path / 'd.msgpack'))
  x = images(2, 8)
  np.testing.assert_array_equal(jitted_features(m, i)(v, x),
                                jitted_features(module, info)(variables, x))


def test_load_backbone_refuses_a_bad_file(run_dirs, tmp_path):
  out = str(tmp_path / 'x.safetensors')
  with pytest.raises(export_lib.ExportError, match='x.safetensors.json: no such file'):
    models.load_backbone(out)
  export_cli.export(run_dirs['mae'][0], out)
  with open(out, 'wb') as f:
    f.write(b'garbage')
  with pytest.raises(export_lib.ExportError, match='not a safetensors file'):
    models.load_backbone(out)


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'jssl.export', *args], cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=300)


def _one_error_line(out, message):
  assert out.returncode == 2, out.stderr[-3000:]
  errors = [l for l in out.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1 and message in errors[0], out.stderr[-3000:]
  assert 'Traceback' not in out.stderr


def test_cli_bad_input_is_one_line_exit_2(tmp_path):
  workdir = tmp_path / 'run'
  workdir.mkdir()
  (workdir / 'config.json').write_text(simclr_config().to_json_best_effort())
  out = str(tmp_path / 'w.safetensors')
  _one_error_line(_cli('--workdir', str(workdir), '--out', out), 'no checkpoint')
  assert not (workdir / 'checkpoints').exists()  # nothing created
  _one_error_line(_cli('--workdir', str(workdir), '--out', out, '--format', 'onnx'),
                  "--format=onnx: value should be one of <safetensors|msgpack>")
  _one_error_line(_cli('--workdir', str(tmp_path / 'nowhere'), '--out', out), 'no config.json')


@pytest.mark.slow
def test_cli_writes_both_files(run_dirs, tmp_path):
  out = str(tmp_path / 'cli.msgpack')
  res = _cli('--workdir', run_dirs['simclr'][0], '--out', out, '--format', 'msgpack',
             '--step', str(STEP))
  assert res.returncode == 0, res.stderr[-3000:]
  line = json.loads(res.stdout.strip().splitlines()[-1])
  assert line['format'] == 'msgpack' and line['step'] == STEP and os.path.isfile(out + '.json')
  _one_error_line(_cli('--workdir', run_dirs['simclr'][0], '--out', out, '--step', '3'),
                  '--step=3: no checkpoint of that step')


# ------------------------------------------------------------------------------------ PyTorch

def torch_resnet(recipe):
  """A torchvision-named ResNet trunk built from the sidecar's recipe (torchvision's blocks
  when it imports, else the same blocks written here), with XLA "SAME" stride-2 padding."""
  torch = pytest.importorskip('torch')
  nn = torch.nn
  try:
    from torchvision.models import resnet as tv  # pylint: disable=g-import-not-at-top
    BasicBlock, Bottleneck = tv.BasicBlock, tv.Bottleneck
  except Exception:  # noqa: BLE001 (absent, or built for another torch)
    BasicBlock, Bottleneck = local_blocks(torch)

  def same_pad(conv):
    conv.padding = (0, 0)

    def hook(_, args):
      x = args[0]
      pads = []
      for size in (x.shape[3], x.shape[2]):
        total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
        pads += [total // 2, total - total // 2]
      return (torch.nn.functional.pad(x, pads),)
    conv.register_forward_pre_hook(hook)

  block = BasicBlock if recipe['block'] == 'BasicBlock' else Bottleneck
  stem = recipe['stem']

  class Trunk(nn.Module):

    def __init__(self):
      super().__init__()
      w0 = recipe['widths'][0]
      self.conv1 = nn.Conv2d(3, w0, stem['kernel_size'], stem['stride'], stem['padding'],
                             bias=False)
      self.bn1 = nn.BatchNorm2d(w0)
      self.maxpool = nn.MaxPool2d(3, 2, 1) if stem['maxpool'] else nn.Identity()
      inplanes = w0
      for i, (n, w) in enumerate(zip(recipe['layers'], recipe['widths'])):
        blocks = []
        for j in range(n):
          stride = 2 if i > 0 and j == 0 else 1
          down = None
          if stride != 1 or inplanes != w * block.expansion:
            down = nn.Sequential(nn.Conv2d(inplanes, w * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(w * block.expansion))
          b = block(inplanes, w, stride, down)
          if stride == 2:
            same_pad(b.conv1 if block is BasicBlock else b.conv2)
          blocks.append(b)
          inplanes = w * block.expansion
        setattr(self, f'layer{i + 1}', nn.Sequential(*blocks))
      self.n = len(recipe['layers'])

    def forward(self, x):
      x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
      for i in range(self.n):
        x = getattr(self, f'layer{i + 1}')(x)
      return x.mean(dim=(2, 3))

  return Trunk()


def local_blocks(torch):
  nn = torch.nn

  class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None):
      super().__init__()
      self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(planes)
      self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(planes)
      self.downsample = downsample

    def forward(self, x):
      y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
      return torch.relu(y + (x if self.downsample is None else self.downsample(x)))

  class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None):
      super().__init__()
      self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
      self.bn1 = nn.BatchNorm2d(planes)
      self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
      self.bn2 = nn.BatchNorm2d(planes)
      self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
      self.bn3 = nn.BatchNorm2d(planes * 4)
      self.downsample = downsample

    def forward(self, x):
      y = torch.relu(self.bn1(self.conv1(x)))
      y = self.bn3(self.conv3(torch.relu(self.bn2(self.conv2(y)))))
      return torch.relu(y + (x if self.downsample is None else self.downsample(x)))

  return BasicBlock, Bottleneck


def torch_vit(kwargs, extra_keys):
  """timm's VisionTransformer built from the sidecar's kwargs when timm imports, else a minimal
  timm-named trunk written here (extra keys such as SimMIM's mask token: plain parameters)."""
  torch = pytest.importorskip('torch')
  nn = torch.nn
  try:
    from timm.models import vision_transformer as timm_vit  # pylint: disable=g-import-not-at-top
  except Exception:  # noqa: BLE001 (absent, or built for another torch)
    timm_vit = None
  if timm_vit is not None:
    net = timm_vit.VisionTransformer(**kwargs)
    for key in extra_keys:
      setattr(net, key, nn.Parameter(torch.zeros(1, 1, kwargs['embed_dim'])))
    return net
  d, heads = kwargs['embed_dim'], kwargs['num_heads']
  hidden = int(d * kwargs['mlp_ratio'])
  grid = kwargs['img_size'] // kwargs['patch_size']

  class LayerScale(nn.Module):

    def __init__(self):
      super().__init__()
      self.gamma = nn.Parameter(torch.ones(d))

    def forward(self, x):
      return x * self.gamma

  class Attention(nn.Module):

    def __init__(self):
      super().__init__()
      self.qkv = nn.Linear(d, 3 * d, bias=kwargs['qkv_bias'])
      self.proj = nn.Linear(d, d)

    def forward(self, x):
      n, t, _ = x.shape
      q, k, v = self.qkv(x).reshape(n, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
      y = torch.nn.functional.scaled_dot_product_attention(q, k, v)
      return self.proj(y.transpose(1, 2).reshape(n, t, d))

  class Mlp(nn.Module):

    def __init__(self):
      super().__init__()
      self.fc1, self.fc2 = nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
      return self.fc2(torch.nn.functional.gelu(self.fc1(x)))

  class Block(nn.Module):

    def __init__(self):
      super().__init__()
      self.norm1, self.norm2 = nn.LayerNorm(d, eps=1e-6), nn.LayerNorm(d, eps=1e-6)
      self.attn, self.mlp = Attention(), Mlp()
      ls = kwargs['init_values'] is not None
      self.ls1 = LayerScale() if ls else nn.Identity()
      self.ls2 = LayerScale() if ls else nn.Identity()

    def forward(self, x):
      x = x + self.ls1(self.attn(self.norm1(x)))
      return x + self.ls2(self.mlp(self.norm2(x)))

  class PatchEmbed(nn.Module):

    def __init__(self):
      super().__init__()
      self.proj = nn.Conv2d(3, d, kwargs['patch_size'], kwargs['patch_size'])

  class VisionTransformer(nn.Module):

    def __init__(self):
      super().__init__()
      self.patch_embed = PatchEmbed()
      self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
      self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, d))
      if 'mask_token' in extra_keys:
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
      self.blocks = nn.Sequential(*[Block() for _ in range(kwargs['depth'])])
      self.norm = nn.LayerNorm(d, eps=1e-6)

    def forward(self, x):
      x = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
      x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
      x = self.norm(self.blocks(x))
      return x[:, 0] if kwargs['global_pool'] == 'token' else x[:, 1:].mean(dim=1)

  return VisionTransformer()


@pytest.mark.slow
@pytest.mark.parametrize('name', NAMES)
def test_torch_loads_strictly_and_gives_the_same_features(run_dirs, tmp_path, name):
  torch = pytest.importorskip('torch')
  from safetensors.torch import load_file  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / f'{name}.safetensors')
  sidecar = export_cli.export(run_dirs[name][0], out)
  recipe = sidecar['torch']
  if sidecar['key_naming'] == 'torchvision':
    net = torch_resnet(recipe)
  else:
    net = torch_vit(recipe['kwargs'], recipe['extra_keys'])
  net.load_state_dict(load_file(out), strict=True)
  net.eval()
  x = images(4, sidecar['input_size'], seed=3)
  module, variables, info = models.load_backbone(out)
  want = np.asarray(jitted_features(module, info)(variables, x))
  mean, std = np.asarray(sidecar['mean'], np.float32), np.asarray(sidecar['std'], np.float32)
  xt = torch.from_numpy(((x - mean) / std).transpose(0, 3, 1, 2).copy())
  with torch.no_grad():
    got = net(xt).numpy()
  np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
