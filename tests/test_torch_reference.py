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
