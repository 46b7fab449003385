"""Test-wide set-up: 8 emulated CPU devices, so that sharded equivalence can be tested anywhere.

XLA_FLAGS must be set before JAX initializes its backend, hence here, before any test imports jax.
Most of the suite's time is XLA compiling small programs that then run a few steps, so the tests
compile with LLVM's optimizations off (`--xla_backend_optimization_level=0`: the same HLO, about
half the compile time, slower kernels) and share JAX's persistent compilation cache between the
pytest workers and the subprocesses they start (one folder per run under the temp dir), so that a
program compiled once is not compiled again. Set XLA_FLAGS or JAX_COMPILATION_CACHE_DIR to
override either.
"""

import os
import tempfile

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8 '
                      '--xla_backend_optimization_level=0')
# The same folder for every pytest-xdist worker of one run (they share its test-run id).
os.environ.setdefault('JAX_COMPILATION_CACHE_DIR', os.path.join(
    tempfile.gettempdir(),
    f'jssl-tests-xla-cache-{os.environ.get("PYTEST_XDIST_TESTRUNUID", os.getpid())}'))
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402

jax.config.update('jax_enable_x64', False)
