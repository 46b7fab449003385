"""dVAE tokenizer and BEiT: Gumbel-softmax gradients, schedules, the tokenizer checkpoint (and the
refusal without one), the masked-only loss, 1 device == 8 devices, presets, the picture hook."""

import functools
import importlib.util
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl import losses, methods
from jssl.eval import recon_grid
from jssl.methods import dvae as dvae_method
from jssl.models import dvae as dvae_model
from jssl.train import checkpoint, optim, runs, sharding
from jssl.train import state as state_lib
from jssl.train import step as step_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 32


def get_config(name, preset=None):
  spec = importlib.util.spec_from_file_location(f'cfg_{name}',
                                                os.path.join(ROOT, 'configs', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def dvae_config():
  """The tiny dVAE shrunk: vocabulary 32, hidden 8, one down-sampling (2 px cells) at 8 px, no
  residual blocks (XLA:CPU compiles convolution gradients slowly)."""
  c = get_config('dvae')
  c.model.update(vocab_size=VOCAB, hidden=8, num_down=1, blocks=0)
  c.data.augment.image_size = 8
  return c


def beit_config(tokenizer_workdir=''):
  """The tiny BEiT shrunk: a 1-block ViT, width 16, patch 2 on 8 px views (4 x 4 patches)."""
  c = get_config('beit')
  c.model.update(width=16, depth=1, num_heads=2, patch_size=2)
  c.data.augment.update(image_size=8, patch_size=2, num_masking_patches=6, min_num_patches=2)
  c.method.tokenizer_workdir = tokenizer_workdir
  return c


def make_batch(method, n=16, seed=0):
  rng = np.random.default_rng(seed)
  batch = {}
  for k, (shape, dtype) in method.input_spec().items():
    if k == 'mask':
      batch[k] = rng.integers(0, 2, (n,) + tuple(shape)).astype(np.int32)
    else:
      batch[k] = rng.random((n,) + tuple(shape), dtype=np.float32)
  return batch


@functools.lru_cache(maxsize=None)
def dvae_built():
  method = methods.build(dvae_config(), 100)
  params, batch_stats, method_state = jax.jit(method.init)(jax.random.PRNGKey(0),
                                                           make_batch(method, 2))
  assert batch_stats == {} and method_state == {}
  return method, params, jax.jit(method.loss_fn)


def host_state(method, tx, params, method_state):
  """A TrainState built from already initialized params (no second compile of `init`)."""
  return state_lib.TrainState(step=np.zeros((), np.int32), params=params, batch_stats={},
                              opt_state=jax.device_get(tx.init(params)),
                              method_state=method_state, rng=np.asarray(jax.random.PRNGKey(1)))


@pytest.fixture(scope='module')
def tokenizer_run(tmp_path_factory):
  """A dVAE run directory (config.json + one orbax checkpoint), params shifted off their init."""
  workdir = str(tmp_path_factory.mktemp('dvae_run'))
  config = dvae_config()
  method, params, _ = dvae_built()
  params = jax.tree.map(lambda p: np.asarray(p) + 0.01, params)
  tx, _ = optim.build(config.optim, 16, 100, 1)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2))
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, 'checkpoints'), use_async=False)
  ckpt.save(jax.device_put(host_state(method, tx, params, {})), force=True)
  ckpt.close()
  return workdir, params


# ------------------------------------------------------------------------------------- dVAE --

def test_gumbel_softmax_relaxation():
  logits = jax.random.normal(jax.random.PRNGKey(0), (64, VOCAB)) * 3
  y = dvae_model.gumbel_softmax(jax.random.PRNGKey(1), logits, 1.0)
  np.testing.assert_allclose(np.asarray(y).sum(-1), 1.0, rtol=1e-5)
  cold = np.asarray(dvae_model.gumbel_softmax(jax.random.PRNGKey(1), logits, 0.01))
  assert np.median(cold.max(-1)) > 0.99  # nearly one-hot at low temperature
  np.testing.assert_array_equal(cold.argmax(-1), np.asarray(y).argmax(-1))  # the same noise
  hard = np.asarray(dvae_model.gumbel_softmax(jax.random.PRNGKey(1), logits, 1.0, hard=True))
  np.testing.assert_allclose(hard, np.eye(VOCAB)[hard.argmax(-1)], atol=1e-6)


def test_dvae_gumbel_path_gives_gradients_to_the_encoder():
  method, params, _ = dvae_built()
  batch = make_batch(method, 4)

  def recon_only(enc_params):  # step 0: the KL weight is still 0 (warm-up), only the Gumbel path
    loss, (_, _, metrics) = method.loss_fn(dict(params, encoder=enc_params), {}, {}, batch,
                                           jax.random.PRNGKey(3), 0)
    return loss, metrics

  (loss, metrics), grads = jax.jit(jax.value_and_grad(recon_only, has_aux=True))(
      params['encoder'])
  assert float(metrics['kl_weight']) == 0.0 and float(loss) == float(metrics['recon_loss'])
  norms = {k: float(optax_norm(v)) for k, v in grads.items()}
  assert all(v > 0 for v in norms.values()), norms  # every encoder layer, logits included
  assert np.isfinite(list(norms.values())).all()
  # the straight-through (hard) sample passes the soft sample's gradient to the logits
  logits = jax.random.normal(jax.random.PRNGKey(0), (8, VOCAB))
  w = jax.random.normal(jax.random.PRNGKey(1), (8, VOCAB))
  for hard in (False, True):
    g = jax.grad(lambda l: jnp.sum(w * dvae_model.gumbel_softmax(jax.random.PRNGKey(2), l, 0.5,
                                                                  hard)))(logits)
    assert float(jnp.abs(g).sum()) > 0


def optax_norm(tree):
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree)))


def test_temperature_and_kl_schedules():
  method, _, _ = dvae_built()  # 100 steps: anneal over 80, KL warm-up over 20
  assert method.anneal_steps == 80 and method.kl_warmup_steps == 20
  taus = np.asarray([float(method.temperature(s)) for s in range(0, 101, 10)])
  np.testing.assert_allclose(taus[0], 1.0)
  np.testing.assert_allclose(taus[8:], 1.0 / 16, rtol=1e-6)  # reached at step 80, then held
  np.testing.assert_allclose(float(method.temperature(40)), 0.25, rtol=1e-6)  # geometric
  assert np.all(np.diff(taus[:9]) < 0)
  kl = [float(dvae_method.kl_weight_at(s, 0.5, 20)) for s in (0, 10, 20, 50)]
  np.testing.assert_allclose(kl, [0.0, 0.25, 0.5, 0.5])
  assert float(dvae_method.kl_weight_at(0, 0.5, 0)) == 0.5
  _, (_, _, metrics) = dvae_built()[2](dvae_built()[1], {}, {}, make_batch(method, 4),
                                       jax.random.PRNGKey(0), 40)
  np.testing.assert_allclose(float(metrics['temperature']), 0.25, rtol=1e-6)
  np.testing.assert_allclose(float(metrics['loss']), float(metrics['recon_loss']) +
                             float(metrics['kl_weight']) * float(metrics['kl']), rtol=1e-5)


def test_dvae_kl_and_perplexity():
  assert float(dvae_method.perplexity(jnp.arange(VOCAB), VOCAB)) == pytest.approx(VOCAB)
  assert float(dvae_method.perplexity(jnp.zeros(50, jnp.int32), VOCAB)) == pytest.approx(1.0)
  method, params, loss_fn = dvae_built()
  _, (_, _, m) = loss_fn(params, {}, {}, make_batch(method, 4), jax.random.PRNGKey(0), 50)
  x = method.normalize(make_batch(method, 4)['view_0'])
  logits = np.asarray(method.encode(params, x)[0], np.float64)
  q = np.exp(logits - logits.max(-1, keepdims=True))
  q /= q.sum(-1, keepdims=True)
  want = np.mean(np.sum(q * np.log(q * VOCAB), -1))  # KL(q || uniform), mean over the cells
  np.testing.assert_allclose(float(m['kl']), want, rtol=1e-4, atol=1e-6)
  assert 1.0 <= float(m['perplexity']) <= VOCAB
  tokens = method.tokens(params, make_batch(method, 4)['view_0'])
  assert tokens.shape == (4, 16) and tokens.dtype == jnp.int32  # 4 x 4 grid at 8 px


def test_recon_grid_png_is_written(tmp_path):
  method, params, _ = dvae_built()
  images = make_batch(method, 3)['view_0']
  cols = recon_grid.reconstruct(method, params, {}, {}, images)
  assert list(cols) == ['original', 'reconstruction']
  assert cols['reconstruction'].shape == images.shape
  assert 0.0 <= cols['reconstruction'].min() and cols['reconstruction'].max() <= 1.0
  path = recon_grid.write_grid(cols, str(tmp_path / 'sub' / 'recon.png'), 'dvae')
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  with pytest.raises(ValueError, match='column'):
    recon_grid.write_grid({'a': images, 'b': images[:2]}, str(tmp_path / 'bad.png'))


# ------------------------------------------------------------------------------------- BEiT --

def test_beit_refuses_to_start_without_a_tokenizer(tmp_path):
  with pytest.raises(ValueError, match='config.method.tokenizer_workdir is empty'):
    runs.build_method(beit_config(''), 10)
  missing = str(tmp_path / 'no_such_run')
  with pytest.raises(FileNotFoundError) as e:
    runs.build_method(beit_config(missing), 10)
  assert 'config.method.tokenizer_workdir' in str(e.value) and missing in str(e.value)
  os.makedirs(os.path.join(missing, 'checkpoints'))
  with open(os.path.join(missing, 'config.json'), 'w') as f:
    f.write(dvae_config().to_json_best_effort())
  with pytest.raises(FileNotFoundError, match='no complete checkpoint'):
    runs.build_method(beit_config(missing), 10)


@functools.lru_cache(maxsize=None)
def beit_built(workdir):
  method = runs.build_method(beit_config(workdir), 100)
  params, batch_stats, method_state = jax.jit(method.init)(jax.random.PRNGKey(0),
                                                           make_batch(method, 2))
  return method, params, method_state


def test_beit_tokenizer_is_loaded_frozen_into_method_state(tokenizer_run):
  workdir, saved = tokenizer_run
  method, params, method_state = beit_built(workdir)
  assert sorted(params) == ['encoder', 'head'] and 'mask_token' in params['encoder']
  assert params['head']['kernel'].shape == (16, VOCAB)
  jax.tree.map(np.testing.assert_array_equal, method_state['tokenizer'], saved)
  # a tokenizer whose cells do not match the ViT's patches is refused
  c = beit_config(workdir)
  c.model.patch_size = 4
  c.data.augment.patch_size = 4
  with pytest.raises(ValueError, match='patch_size'):
    runs.build_method(c, 10)


def test_beit_loss_counts_masked_patches_only(tokenizer_run):
  method, params, method_state = beit_built(tokenizer_run[0])
  batch = make_batch(method, 4)
  loss_fn = jax.jit(method.loss_fn)
  loss, (_, new_state, metrics) = loss_fn(params, {}, method_state, batch, jax.random.PRNGKey(0),
                                          0)
  assert new_state is not None and float(metrics['loss']) == float(loss)
  mask = batch['mask'].reshape(4, -1)
  tokens = np.asarray(method.visual_tokens(method_state, batch['view_0']))
  forward = jax.jit(method.forward)
  logits = np.asarray(forward(params, method.normalize(batch['view_0']), mask), np.float64)
  logp = logits - logits.max(-1, keepdims=True)
  logp -= np.log(np.exp(logp).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, tokens[..., None], -1)[..., 0]
  np.testing.assert_allclose(float(loss), (nll * mask).sum() / mask.sum(), rtol=1e-5)
  assert abs(nll.mean() - (nll * mask).sum() / mask.sum()) > 1e-5  # the mask matters
  np.testing.assert_allclose(float(loss), float(losses.beit_loss(logits, tokens, mask)),
                             rtol=1e-5)
  np.testing.assert_allclose(float(metrics['mask_ratio']), mask.mean(), rtol=1e-6)
  # the mask token hides the masked patches: their pixels do not change the loss
  pix = np.kron(batch['mask'], np.ones((2, 2), np.int32))[..., None]
  noisy = dict(batch, view_0=np.where(pix == 1, 0.5, batch['view_0']).astype(np.float32))
  noisy_logits = forward(params, method.normalize(noisy['view_0']), mask)
  np.testing.assert_allclose(noisy_logits, logits, rtol=1e-4, atol=1e-4)
  cols = recon_grid.reconstruct(method, params, {}, method_state, batch['view_0'][:2])
  assert list(cols) == ['original', 'masked', 'tokenizer', 'beit']
  assert all(v.shape == (2, 8, 8, 3) for v in cols.values())


# --------------------------------------------------------------------- engine, 1 vs 8 devices --

@pytest.mark.slow  # 30-40 s each on 2 loaded CPU cores: two train-step compiles (1 and 8 devices)
@pytest.mark.parametrize('name', ['dvae', 'beit'])
def test_one_device_equals_eight_devices(name, tokenizer_run):
  assert jax.device_count() >= 8, 'tests/conftest.py sets 8 emulated CPU devices'
  if name == 'dvae':
    method, params, _ = dvae_built()
    method_state, config = {}, dvae_config()
  else:
    method, params, method_state = beit_built(tokenizer_run[0])
    config = beit_config(tokenizer_run[0])
  tx, schedule = optim.build(config.optim, 16, 100, 2)
  host = host_state(method, tx, jax.device_get(params), jax.device_get(method_state))
  results = {}
  for n in (1, 8):
    mesh = sharding.make_mesh(jax.devices()[:n])
    state = jax.device_put(host, sharding.replicated(mesh))
    train_step = step_lib.make_train_step(method, tx, mesh, schedule)
    for step in range(2):  # the warm-up's first learning rate is 0: the second step moves
      state, metrics = train_step(state, sharding.put_batch(make_batch(method, seed=step), mesh))
    results[n] = jax.device_get((state, metrics))
  (s1, m1), (s8, m8) = results[1], results[8]
  assert float(m1['finite']) == 1.0
  for k in m1:
    np.testing.assert_allclose(m1[k], m8[k], rtol=1e-4, atol=1e-6, err_msg=k)
  for tree in ('params', 'opt_state', 'method_state'):
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
                 getattr(s1, tree), getattr(s8, tree))
  delta = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), host.params, s1.params)
  assert max(jax.tree.leaves(delta)) > 1e-5
  # the frozen tokenizer does not move
  jax.tree.map(np.testing.assert_array_equal, host.method_state, s1.method_state)


# ---------------------------------------------------------------------------------- presets --

@pytest.mark.parametrize('preset,vocab,grid', [('tiny', 256, 8), ('cifar10', 1024, 8),
                                               ('imagenet', 8192, 14)])
def test_dvae_presets(preset, vocab, grid):
  config = get_config('dvae', preset)
  method = methods.build(config, 1000)
  assert method.vocab_size == vocab and method.grid == grid
  assert method.image_size // method.model.downsample == grid
  params = jax.eval_shape(lambda: method.init(jax.random.PRNGKey(0), make_batch(method, 2))[0])
  assert params['encoder']['logits']['kernel'].shape[-1] == vocab
  assert params['decoder']['codebook']['kernel'].shape[2] == vocab


@pytest.mark.parametrize('preset', ['tiny', 'cifar10', 'imagenet'])
def test_beit_presets(preset):
  config = get_config('beit', preset)
  assert config.method.tokenizer_workdir == '' and config.data.recipe == 'beit'
  a = config.data.augment
  assert a.patch_size == config.model.patch_size == (16 if preset == 'imagenet' else 4)
  g = a.image_size // a.patch_size
  assert 0.35 <= a.num_masking_patches / g ** 2 <= 0.42  # about 40%
  # the matching tokenizer preset tokenizes one token per patch
  tok = get_config('dvae', preset)
  assert 2 ** tok.model.num_down == config.model.patch_size
  assert tok.data.augment.image_size == a.image_size
  with open(os.devnull, 'w') as f:
    json.dump(config.to_dict(), f)
