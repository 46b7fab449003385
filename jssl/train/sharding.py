"""Mesh helpers: one `Mesh` over all devices with a single 'data' axis.

The state is replicated (`replicated(mesh)`), batches are sharded on their first axis
(`data_sharding(mesh)`); `put_batch` places a host (numpy) batch of one process on the mesh
(single process only; multi-host input goes through jssl.data.feeding.global_batch).
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA = 'data'


def make_mesh(devices=None) -> Mesh:
  """A 1-D mesh with axis 'data' over `devices` (default: all devices of all processes)."""
  devices = jax.devices() if devices is None else list(devices)
  return Mesh(np.asarray(devices), (DATA,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharding(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA))


class BatchSizeError(ValueError):
  """A batch size that does not divide across the devices (a user error naming the key)."""


def check_batch_size(global_batch_size: int, mesh: Mesh, key: str = 'batch_size') -> None:
  """Fails with a clear message when the batch does not divide across the mesh's devices."""
  n = mesh.devices.size
  if global_batch_size % n:
    raise BatchSizeError(f'config.{key}={global_batch_size} must be a multiple of the number '
                     f'of devices ({n})')


def put_batch(batch: dict, mesh: Mesh) -> dict:
  """Host arrays -> global arrays sharded on 'data' (one process)."""
  return jax.device_put(dict(batch), data_sharding(mesh))
