"""Test-wide set-up: 8 emulated CPU devices, so that sharded equivalence can be tested anywhere.

XLA_FLAGS must be set before JAX initializes its backend, hence here, before any test imports jax.
Most of the suite's time is XLA compiling small programs that then run a few steps, so the tests
compile with LLVM's optimizations off (`--xla_backend_optimization_level=0`: the same HLO, about
half the compile time, slower kernels) and share JAX's persistent compilation cache between the
pytest workers and the subprocesses they start (a temporary folder, removed at the end), so that a
program compiled once is not compiled again. Set XLA_FLAGS or JAX_COMPILATION_CACHE_DIR to
override either.
"""

import os
import shutil
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8 '
                      '--xla_backend_optimization_level=0')
# Set here in the pytest process that starts the workers, which inherit it; removed at its end.
_OWN_CACHE = 'JAX_COMPILATION_CACHE_DIR' not in os.environ
if _OWN_CACHE:
  os.environ['JAX_COMPILATION_CACHE_DIR'] = tempfile.mkdtemp(prefix='jssl-tests-xla-cache-')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402

jax.config.update('jax_enable_x64', False)


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE and not os.environ.get('PYTEST_XDIST_WORKER'):
    shutil.rmtree(os.environ['JAX_COMPILATION_CACHE_DIR'], ignore_errors=True)
