"""Feeding: local numpy batches -> global arrays sharded over the 8 emulated CPU devices."""

import subprocess
import sys

import jax
import numpy as np
import pytest
from jax.sharding import Mesh

from jssl.data import feeding


def _mesh(axes=('data',)):
  devices = np.array(jax.devices())
  return Mesh(devices.reshape((-1,) + (1,) * (len(axes) - 1)), axes)


def test_global_batch_shape_sharding_and_content():
  assert jax.device_count() == 8
  mesh = _mesh()
  local = {'view_0': np.arange(16 * 2 * 3, dtype=np.float32).reshape(16, 2, 3),
           'label': np.arange(16, dtype=np.int32), 'valid': np.ones(16, bool)}
  out = feeding.global_batch(local, mesh)
  for name, value in local.items():
    arr = out[name]
    assert arr.shape == value.shape and arr.dtype == value.dtype
    assert len(arr.sharding.device_set) == 8
    assert arr.sharding.spec == jax.sharding.PartitionSpec('data')
    assert {s.data.shape[0] for s in arr.addressable_shards} == {2}
    np.testing.assert_array_equal(np.asarray(arr), value)
  shard0 = min(out['label'].addressable_shards, key=lambda s: s.index[0].start or 0)
  np.testing.assert_array_equal(np.asarray(shard0.data), [0, 1])


def test_other_mesh_axes_are_replicated():
  mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ('data', 'model'))
  out = feeding.global_batch({'x': np.arange(8, dtype=np.float32)}, mesh)
  assert {s.data.shape for s in out['x'].addressable_shards} == {(2,)}
  np.testing.assert_array_equal(np.asarray(out['x']), np.arange(8))


def test_divisibility_and_axis_errors():
  with pytest.raises(ValueError, match=r'global batch size 12 .*8 devices'):
    feeding.global_batch({'label': np.zeros(12, np.int32)}, _mesh())
  with pytest.raises(ValueError, match="no axis 'batch'"):
    feeding.global_batch({'label': np.zeros(8, np.int32)}, _mesh(), data_axis='batch')


def test_prefetch_to_device_keeps_order():
  batches = [{'x': np.full(8, k, np.float32)} for k in range(5)]
  out = list(feeding.prefetch_to_device(iter(batches), 2, _mesh()))
  assert [int(b['x'][0]) for b in out] == list(range(5))


def test_feeding_imports_without_tensorflow():
  code = ('import sys; import jssl.data.feeding; '
          'assert not [m for m in sys.modules if m.startswith("tensorflow")]')
  subprocess.run([sys.executable, '-c', code], check=True)
