"""jssl.models: ResNet shapes and stems, dtypes, MLP heads, Encoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import models


@pytest.mark.parametrize('name,stem,size,width,dim', [
    ('resnet_tiny', 'cifar', 32, 8, 64),
    ('resnet18', 'cifar', 32, 64, 512),
    ('resnet50', 'imagenet', 64, 16, 512),
])
def test_resnet_feature_shapes(name, stem, size, width, dim):
  model = models.resnet(name, width=width, stem=stem)
  x = jnp.zeros((2, size, size, 3))
  shapes = jax.eval_shape(lambda: model.init_with_output(jax.random.PRNGKey(0), x, train=True))
  out, variables = shapes
  assert out.shape == (2, dim)
  assert models.feature_dim(model) == dim
  assert set(variables) == {'params', 'batch_stats'}


def test_cifar_stem_keeps_resolution_imagenet_stem_divides_by_4():
  x = jnp.zeros((1, 32, 32, 3))
  for stem, first_conv_stride in (('cifar', 1), ('imagenet', 2)):
    model = models.resnet('resnet_tiny', width=4, stem=stem)
    _, state = jax.eval_shape(lambda m=model: m.init_with_output(
        jax.random.PRNGKey(0), x, train=True, capture_intermediates=True))
    stage1 = state['intermediates']['stage1_block1']['__call__'][0]
    assert stage1.shape[1] == (32 if stem == 'cifar' else 8), stem
    del first_conv_stride


def test_stage_sizes_override_and_unknown_name():
  model = models.resnet('resnet18', width=4, stage_sizes=(1, 1))
  assert model.stage_sizes == (1, 1) and models.feature_dim(model) == 8
  with pytest.raises(ValueError, match='resnet9'):
    models.resnet('resnet9')


def test_bf16_compute_keeps_float32_params():
  model = models.resnet('resnet_tiny', width=4, stem='cifar', stage_sizes=(1,),
                        dtype=jnp.bfloat16)
  x = jnp.ones((2, 8, 8, 3))
  out, variables = jax.eval_shape(
      lambda: model.init_with_output(jax.random.PRNGKey(0), x, train=True))
  assert out.dtype == jnp.bfloat16
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables['params']))


def test_mlp_layers_and_bn():
  mlp = models.MLP(hidden_dims=(16, 16), out_dim=4, last_bn=True)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 5)), jnp.float32)
  out, variables = jax.eval_shape(
      lambda: mlp.init_with_output(jax.random.PRNGKey(0), x, train=True))
  assert out.shape == (8, 4)
  assert set(variables['params']) == {'dense1', 'bn1', 'dense2', 'bn2', 'dense3', 'bn3'}
  assert 'bias' not in variables['params']['dense3']  # BN follows: no bias
  plain = models.MLP(hidden_dims=(16,), out_dim=4)
  params = jax.eval_shape(lambda: plain.init(jax.random.PRNGKey(0), x, train=True))['params']
  assert set(params) == {'dense1', 'bn1', 'dense2'} and 'bias' in params['dense2']


def test_encoder_outputs_and_teacher_tree():
  backbone = models.resnet('resnet_tiny', width=4, stem='cifar', stage_sizes=(1,))
  enc = models.Encoder(backbone, models.MLP((8,), 6), models.MLP((8,), 6))
  x = jnp.ones((3, 8, 8, 3))
  teacher = models.Encoder(backbone, models.MLP((8,), 6))

  def run():
    (h, z, p), variables = enc.init_with_output(jax.random.PRNGKey(0), x, train=True)
    params = {k: variables['params'][k] for k in ('backbone', 'projector')}
    stats = {k: variables['batch_stats'][k] for k in ('backbone', 'projector')}
    _, zt, pt = teacher.apply({'params': params, 'batch_stats': stats}, x, train=False)
    h2 = enc.apply(variables, x, train=False, method=models.Encoder.embed)
    return h, z, p, variables, zt, pt, h2

  h, z, p, variables, zt, pt, h2 = jax.eval_shape(run)
  assert h.shape == (3, 4) and z.shape == (3, 6) and p.shape == (3, 6)
  assert set(variables['params']) == {'backbone', 'projector', 'predictor'}
  assert pt is None and zt.shape == (3, 6) and h2.shape == (3, 4)
