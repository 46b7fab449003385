"""Test-wide set-up: 8 emulated CPU devices, so that sharded equivalence can be tested anywhere.

XLA_FLAGS must be set before JAX initializes its backend, hence here, before any test imports jax.
"""

import os

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import jax  # noqa: E402

jax.config.update('jax_enable_x64', False)
