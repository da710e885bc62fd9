"""The parent's environment stays out of reach: a fresh host process holds a secret in
its environment (so /proc/<pid>/environ has it too), and an attack that looks in
os.environ and every /proc/*/environ it can open must not find it."""

import pytest

from tests.stages.sandbox import hostile


@pytest.mark.parametrize("path", hostile.PATHS)
def test_the_parent_environment_is_not_readable(path):
    report = hostile.env_read_in_a_fresh_host(path)
    assert report["control"] == 5                     # unsandboxed, the attack finds the secret
    assert not report["passed"], report["status"]
    assert report["seconds"] < 3.0
