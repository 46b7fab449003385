"""jssl.methods.collapse: the collapse diagnostics against float64 NumPy references, on collapsed
and healthy networks, inside jit, in the DINO / SwAV metrics and in the training loop's logs."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jssl.methods import collapse


def _ref_embedding_std(z):
  z = np.asarray(z, np.float64)
  zn = z / np.linalg.norm(z, axis=1, keepdims=True)
  return zn.std(axis=0).mean()


def _ref_effective_rank(h):
  s = np.linalg.svd(np.asarray(h, np.float64), compute_uv=False)
  p = s / s.sum()
  p = p[p > 0]
  return np.exp(-(p * np.log(p)).sum())


def _ref_entropy(p):
  p = np.asarray(p, np.float64)
  return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def test_diagnostics_match_float64_references():
  rng = np.random.default_rng(0)
  h = rng.normal(size=(300, 24)) * np.linspace(0.1, 3.0, 24) + 0.5
  np.testing.assert_allclose(collapse.embedding_std(h), _ref_embedding_std(h), rtol=1e-5)
  np.testing.assert_allclose(collapse.effective_rank(h), _ref_effective_rank(h), rtol=1e-4)
  logits = rng.normal(size=(2, 50, 16)) * 3
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  ent = collapse.assignment_entropies(p)
  flat = p.reshape(-1, 16)
  np.testing.assert_allclose(ent['entropy_of_mean'], _ref_entropy(flat.mean(0)), rtol=1e-5)
  np.testing.assert_allclose(ent['mean_entropy'], _ref_entropy(flat).mean(), rtol=1e-5)
  jitted = jax.jit(lambda x: (collapse.embedding_std(x), collapse.effective_rank(x)))(h)
  np.testing.assert_allclose(jitted, [_ref_embedding_std(h), _ref_effective_rank(h)], rtol=1e-4)


class _Net(nn.Module):
  """A one-layer network; with a zero kernel its output is a constant (a collapsed network)."""
  collapsed: bool

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.zeros if self.collapsed else nn.initializers.normal(1.0)
    return nn.Dense(64, kernel_init=init, bias_init=nn.initializers.normal(1.0))(x)


@pytest.mark.parametrize('collapsed', [True, False])
def test_a_collapsed_network_reads_collapsed_and_a_random_gaussian_one_does_not(collapsed):
  x = jax.random.normal(jax.random.PRNGKey(0), (1000, 128))
  net = _Net(collapsed)
  out = net.apply(net.init(jax.random.PRNGKey(1), x), x)
  std, rank = float(collapse.embedding_std(out)), float(collapse.effective_rank(out))
  if collapsed:
    assert std < 1e-4 and rank < 1.01, (std, rank)
  else:  # isotropic-ish: about 1/sqrt(d) and most of the 64 dimensions in use
    assert 0.8 / np.sqrt(64) < std < 1.2 / np.sqrt(64) and rank > 40, (std, rank)


def test_assignment_entropies_tell_uniform_one_hot_and_healthy_apart():
  k, n = 32, 256
  ln_k = np.log(k)
  uniform = collapse.assignment_entropies(np.full((n, k), 1.0 / k))
  np.testing.assert_allclose([uniform['entropy_of_mean'], uniform['mean_entropy']],
                             [ln_k, ln_k], rtol=1e-5)
  one_hot = collapse.assignment_entropies(np.eye(k)[np.zeros(n, int)])
  np.testing.assert_allclose([one_hot['entropy_of_mean'], one_hot['mean_entropy']], [0, 0],
                             atol=1e-6)
  healthy = collapse.assignment_entropies(np.eye(k)[np.arange(n) % k])
  np.testing.assert_allclose(healthy['entropy_of_mean'], ln_k, rtol=1e-5)
  np.testing.assert_allclose(healthy['mean_entropy'], 0.0, atol=1e-6)


def _tiny_config(method):
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  spec = importlib.util.spec_from_file_location(f'cfg_{method}',
                                                os.path.join(root, 'configs', f'{method}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config('tiny')


@pytest.mark.parametrize('name,prefix', [('dino', 'teacher'), ('swav', 'code')])
def test_dino_and_swav_report_assignment_entropies_of_their_targets(name, prefix):
  from jssl import methods  # pylint: disable=g-import-not-at-top
  config = _tiny_config(name)
  method = methods.build(config, 100, 10)
  rng = jax.random.PRNGKey(0)
  batch = {k: jax.random.uniform(jax.random.fold_in(rng, i), (8,) + shape, dtype)
           for i, (k, (shape, dtype)) in enumerate(method.input_spec().items())}
  params, stats, state = method.init(rng, batch)
  _, (_, _, metrics) = method.loss_fn(params, stats, state, batch, rng, 0)
  k = config.method.out_dim if name == 'dino' else config.method.n_prototypes
  of_mean, mean = float(metrics[f'{prefix}_entropy_of_mean']), float(
      metrics[f'{prefix}_mean_entropy'])
  assert 0 <= mean <= of_mean + 1e-4 <= np.log(k) + 1e-3, (mean, of_mean, np.log(k))
  np.testing.assert_allclose(metrics['entropy_uniform'], np.log(k), rtol=1e-6)
  if name == 'dino':  # the same figures as the centred, sharpened teacher computed here
    groups = method.crops.groups(batch)
    teacher, _ = method._forward(state['teacher_params'], state['teacher_batch_stats'],
                                 groups[:1], None)
    q = jax.nn.softmax((teacher - state['center']) / method.teacher_temperature(0), axis=-1)
    np.testing.assert_allclose(of_mean, _ref_entropy(np.asarray(q).reshape(-1, k).mean(0)),
                               rtol=1e-4)
    np.testing.assert_allclose(mean, _ref_entropy(np.asarray(q).reshape(-1, k)).mean(),
                               rtol=1e-4)


def test_training_loop_logs_the_diagnostics_and_plots_them(tmp_path):
  from jssl.train import loop  # pylint: disable=g-import-not-at-top
  config = _tiny_config('simclr')
  config.total_steps = 4
  config.batch_size = 16
  config.log.update(every_steps=2, tensorboard=False)
  config.eval.update(every_epochs=0, at_start=False, final=True, batch_size=64,
                     collapse_every_steps=2, collapse_examples=64, max_train_examples=128)
  config.checkpoint.use_async = False
  devices = jax.devices()[:1]
  result = loop.train(config, str(tmp_path), devices=devices, log=lambda s: None)
  records = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  logged = [r for r in records if 'loss' in r]
  assert [r['step'] for r in logged] == [2, 4]
  for r in logged:
    assert r['embedding_std'] > 0 and 1 <= r['effective_rank'] <= 64
  assert 1 <= result['effective_rank'] and 0 < result['embedding_std'] < 1
  assert (tmp_path / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
