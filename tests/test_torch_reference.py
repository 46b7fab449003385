"""Tests of benchmarks/torch_reference.py; run only where torch is installed (not in CI)."""

import importlib.util
import math
import pathlib

import numpy as np
import pytest

torch = pytest.importorskip('torch')

from jssl import losses  # noqa: E402


def load_reference():
  path = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks' / 'torch_reference.py'
  spec = importlib.util.spec_from_file_location('torch_reference', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


ref = load_reference()


def test_tiny_step_runs():
  out = ref.time_step(batch_size=4, image_size=8, steps=1, warmup=1)
  assert math.isfinite(out['step_ms']) and out['step_ms'] > 0
  assert math.isfinite(out['images_per_s']) and math.isfinite(out['loss'])
  assert out['torch_version'] == torch.__version__ and out['threads'] >= 1


@pytest.mark.parametrize('temperature', [0.2, 0.5])
def test_nt_xent_matches_jssl(temperature):
  rng = np.random.default_rng(0)
  z1, z2 = rng.normal(size=(2, 8, 16))
  t = ref.nt_xent(torch.from_numpy(z1), torch.from_numpy(z2), temperature=temperature)
  j = losses.nt_xent(z1, z2, temperature=temperature)  # computes in float32
  np.testing.assert_allclose(float(j), float(t), rtol=1e-5)


def test_lars_matches_optax():
  """One LARS step on a single weight matrix equals optax.lars (no masks: a weight)."""
  import optax
  rng = np.random.default_rng(1)
  w, g = rng.normal(size=(2, 4, 3)).astype(np.float32)
  tw = torch.nn.Parameter(torch.from_numpy(w.copy()))
  tw.grad = torch.from_numpy(g.copy())
  opt = ref.LARS([tw], lr=0.5, momentum=0.9, weight_decay=1e-2, trust_coefficient=0.001)
  opt.step()
  tx = optax.lars(0.5, weight_decay=1e-2, trust_coefficient=0.001, momentum=0.9)
  updates, _ = tx.update(g, tx.init(w), w)
  np.testing.assert_allclose(tw.detach().numpy(), w + np.asarray(updates), rtol=1e-5, atol=1e-7)


def load_vit_reference():
  path = pathlib.Path(__file__).resolve().parents[1] / 'benchmarks' / 'torch_reference_vit.py'
  spec = importlib.util.spec_from_file_location('torch_reference_vit', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_vit_reference_matches_jssl_positions_patches_and_runs():
  """The MAE reference uses jssl's position embeddings and patch order, and its step runs."""
  from jssl.models.pos_embed import sincos_2d  # pylint: disable=g-import-not-at-top
  vit_ref = load_vit_reference()
  np.testing.assert_allclose(vit_ref.sincos_2d(32, 4).numpy(),
                             np.reshape(np.asarray(sincos_2d(32, 4, 4)), (16, 32)), atol=1e-6)
  images = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)
  model = vit_ref.MAE(image_size=8, patch=4, width=16, depth=1, heads=2, dec_width=8,
                      dec_depth=1, dec_heads=2)
  np.testing.assert_allclose(model.patchify(torch.from_numpy(images)).numpy(),
                             np.asarray(losses.patchify(images.transpose(0, 2, 3, 1), 4)),
                             atol=1e-7)
  out = vit_ref.time_step(batch_size=4, image_size=8, patch=4, width=16, depth=1, heads=2,
                          dec_width=8, dec_depth=1, dec_heads=2, steps=1, warmup=1)
  assert out['finite'] and out['images_per_s'] > 0
