"""Multi-process start-up: one JAX process per host (or per GPU), joined by `jax.distributed`.

A run is multi-process when the command line says so (`--coordinator HOST:PORT
--num_processes N --process_id I`, or `--coordinator auto` to let JAX read a TPU pod's, SLURM's
or Open MPI's environment) or when it runs as one task of a multi-task SLURM step (`srun`).
Then `initialize(setup)` calls `jax.distributed.initialize(...)`, which must happen before
anything touches a JAX backend; a single-process run needs and does nothing.

- `detect(env, coordinator=..., num_processes=..., process_id=..., local_device_ids=...)`
  is pure: an environment mapping and the flag values in, a `Setup` (or None: one process)
  out, with a ValueError naming the flag or variable that is missing or wrong.
- `initialize(setup)`: CPU processes exchange data through gloo (TCP) collectives, which JAX
  enables for the CPU backend once the distributed client exists; GPUs and TPUs use their own
  interconnects. JAX's preemption service is turned off: its C++ SIGTERM handler would swallow
  a SIGTERM that arrives before the training loop installs its own; jssl.train.loop shares a
  SIGTERM between the processes itself. Returns whether the run is multi-process.

After `initialize`, `jax.devices()` lists every device of every process, and the trainer's mesh
spans them all (jssl.train.sharding.make_mesh).

SLURM: a step with SLURM_STEP_NUM_TASKS > 1. The coordinator is the step's first node at port
JAX_COORDINATOR_PORT, else 61440 + job id mod 4096 (above Linux's ephemeral ports, and distinct
for jobs sharing a node). With more tasks than nodes (one task per GPU) each process gets the
GPU of its SLURM_LOCALID, unless SLURM already narrowed CUDA_VISIBLE_DEVICES to one GPU.
"""

import dataclasses
import re
from typing import Mapping, Optional, Sequence

AUTO = 'auto'


@dataclasses.dataclass(frozen=True)
class Setup:
  """How this process joins the run. `origin`: 'flags', 'auto' (JAX's own cluster detection)
  or 'slurm'. None fields are left to JAX (only with origin 'auto')."""
  origin: str
  coordinator: Optional[str] = None
  num_processes: Optional[int] = None
  process_id: Optional[int] = None
  local_device_ids: Optional[tuple] = None

  def describe(self) -> str:
    parts = [f'process {self.process_id if self.process_id is not None else "?"} of '
             f'{self.num_processes or "?"}',
             f'coordinator {self.coordinator or "(chosen by JAX)"}', f'from {self.origin}']
    if self.local_device_ids is not None:
      parts.append(f'local devices {list(self.local_device_ids)}')
    return ', '.join(parts)


def first_host(nodelist: str) -> str:
  """The first host name of a SLURM host list: 'gpu[003-010,012],big1' -> 'gpu003'."""
  nodelist = nodelist.strip()
  match = re.match(r'([^,\[]+)(?:\[([^\]]*)\])?', nodelist)
  if not match or not match.group(1):
    raise ValueError(f'cannot read a host name from the SLURM node list {nodelist!r}')
  prefix, ranges = match.group(1), match.group(2)
  if ranges is None:
    return prefix
  first = re.split(r'[,-]', ranges, maxsplit=1)[0]
  return prefix + first


def _int(env: Mapping[str, str], name: str) -> int:
  value = env.get(name, '')
  try:
    return int(value)
  except ValueError:
    raise ValueError(f'environment variable {name}={value!r} is not an integer') from None


def _check_address(coordinator: str) -> None:
  host, sep, port = coordinator.rpartition(':')
  if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
    raise ValueError(f'--coordinator={coordinator!r} must be HOST:PORT (e.g. 10.0.0.2:8476) '
                     'or "auto"')


def _slurm(env: Mapping[str, str], local_device_ids) -> Optional[Setup]:
  if 'SLURM_STEP_NUM_TASKS' not in env:  # not inside `srun` (e.g. the batch script itself)
    return None
  num = _int(env, 'SLURM_STEP_NUM_TASKS')
  if num <= 1:
    return None
  for name in ('SLURM_PROCID', 'SLURM_STEP_NODELIST', 'SLURM_JOB_ID'):
    if name not in env:
      raise ValueError(f'SLURM step with {num} tasks but {name} is not set')
  port = env.get('JAX_COORDINATOR_PORT') or str(61440 + _int(env, 'SLURM_JOB_ID') % 4096)
  nodes = _int(env, 'SLURM_STEP_NUM_NODES') if 'SLURM_STEP_NUM_NODES' in env else 1
  ids = local_device_ids
  visible = env.get('CUDA_VISIBLE_DEVICES')
  if ids is None and num > nodes and 'SLURM_LOCALID' in env and not (
      visible is not None and ',' not in visible):
    ids = (_int(env, 'SLURM_LOCALID'),)
  return Setup('slurm', f'{first_host(env["SLURM_STEP_NODELIST"])}:{port}', num,
               _int(env, 'SLURM_PROCID'), ids)


def detect(env: Mapping[str, str], *, coordinator: Optional[str] = None,
           num_processes: Optional[int] = None, process_id: Optional[int] = None,
           local_device_ids: Optional[Sequence[int]] = None) -> Optional[Setup]:
  """The multi-process `Setup` of this process, or None for a single-process run.

  Explicit values win over the environment; `coordinator='auto'` hands the discovery to JAX
  (`jax.distributed.initialize()` with whatever is not given).
  """
  try:
    ids = tuple(int(i) for i in local_device_ids) if local_device_ids else None
  except ValueError:
    raise ValueError(f'--local_device_ids={",".join(map(str, local_device_ids))}: expected '
                     'integers, e.g. 0 or 0,1') from None
  if coordinator == AUTO:
    return Setup(AUTO, None, num_processes, process_id, ids)
  if coordinator or num_processes is not None or process_id is not None:
    if num_processes == 1 and process_id in (None, 0):
      return None
    missing = [f'--{name}' for name, value in (('coordinator', coordinator),
                                               ('num_processes', num_processes),
                                               ('process_id', process_id)) if value is None]
    if missing:
      raise ValueError(f'a multi-process run needs --coordinator, --num_processes and '
                       f'--process_id together; missing: {", ".join(missing)}')
    _check_address(coordinator)
    if num_processes < 1 or not 0 <= process_id < num_processes:
      raise ValueError(f'--process_id={process_id} must be in [0, --num_processes='
                       f'{num_processes})')
    return Setup('flags', coordinator, int(num_processes), int(process_id), ids)
  return _slurm(env, ids)


def initialize(setup: Optional[Setup], timeout_s: int = 300) -> bool:
  """Joins the distributed run described by `setup` (None: nothing to do). Call it before any
  JAX computation or device query. Returns True when the run is multi-process."""
  if setup is None:
    return False
  import jax  # pylint: disable=g-import-not-at-top
  if jax.distributed.is_initialized():
    return True
  if jax.config.jax_cpu_collectives_implementation is None:
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.config.update('jax_enable_preemption_service', False)
  kwargs = dict(coordinator_address=setup.coordinator, num_processes=setup.num_processes,
                process_id=setup.process_id, initialization_timeout=timeout_s)
  if setup.local_device_ids is not None:
    kwargs['local_device_ids'] = list(setup.local_device_ids)
  if setup.origin != AUTO:  # everything is known: JAX must not override it from the environment
    kwargs['cluster_detection_method'] = 'deactivate'
  jax.distributed.initialize(**kwargs)
  return True
