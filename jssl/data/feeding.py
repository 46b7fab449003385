"""Host -> device: per-process numpy batches become global jax.Arrays sharded on the data axis.

No TensorFlow here: this module imports with JAX and numpy only.
"""

import collections
from typing import Iterable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P


def data_sharding(mesh: Mesh, data_axis: str = 'data') -> NamedSharding:
  """Leading (batch) dimension split over `data_axis`, replicated over the other axes."""
  if data_axis not in mesh.shape:
    raise ValueError(f'mesh has no axis {data_axis!r}; its axes: {tuple(mesh.shape)}')
  return NamedSharding(mesh, P(data_axis))


def global_batch(local_batch: dict, mesh: Mesh, data_axis: str = 'data') -> dict:
  """{name: local numpy [b, ...]} -> {name: global jax.Array [b * process_count, ...]}."""
  sharding = data_sharding(mesh, data_axis)
  num_shards = mesh.shape[data_axis]
  out = {}
  for name, value in local_batch.items():
    value = np.asarray(value)
    if value.ndim == 0:
      raise ValueError(f'batch entry {name!r} is a scalar; every entry needs a batch dimension')
    global_size = value.shape[0] * jax.process_count()
    if global_size % num_shards:
      raise ValueError(f'global batch size {global_size} (batch entry {name!r}) does not divide '
                       f'by the {num_shards} devices of mesh axis {data_axis!r}')
    global_shape = (global_size,) + value.shape[1:]
    out[name] = jax.make_array_from_process_local_data(sharding, value, global_shape)
  return out


def prefetch_to_device(iterator: Iterable[dict], size: int, mesh: Mesh,
                       data_axis: str = 'data') -> Iterator[dict]:
  """Yields global batches, keeping `size` of them in flight (transfers are asynchronous)."""
  if size < 1:
    raise ValueError(f'prefetch size must be >= 1, got {size}')
  queue = collections.deque()
  it = iter(iterator)

  def fill():
    while len(queue) < size:
      try:
        queue.append(global_batch(next(it), mesh, data_axis))
      except StopIteration:
        return

  fill()
  while queue:
    yield queue.popleft()
    fill()
