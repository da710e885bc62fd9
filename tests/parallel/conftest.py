"""tests/parallel: the expert-parallel JAX trainer on 8 simulated CPU devices.

They need KERAS_BACKEND=jax and XLA_FLAGS=--xla_force_host_platform_device_count=8 set
before JAX starts, so they run in a session of their own: `make test-parallel` (part of
`make test`). In any other session they are not collected."""

import os

import pytest

DEVICES = 8
ENVIRONMENT_READY = (os.environ.get("KERAS_BACKEND") == "jax"
                     and f"device_count={DEVICES}" in os.environ.get("XLA_FLAGS", ""))
if not ENVIRONMENT_READY:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def devices():
    import jax

    assert len(jax.devices()) == DEVICES
    return jax.devices()
