"""The fallback ("plain": no namespaces available) still contains what it claims: forged
passes, fork bombs, setsid escapes, memory hogs and infinite loops; and, where the kernel
has Landlock, file access, the parent's environment, TCP and signals (isolation.py lists
what it does not contain). Forced here by presetting the probe's answer."""

import os
import socket
import time

import pytest

from stages.sandbox import bootstrap, isolation, probe
from tests.stages.sandbox import hostile
from tests.stages.sandbox.test_hostile import attack


@pytest.fixture(autouse=True)
def plain_mode(monkeypatch):
    monkeypatch.setattr(probe, "_mode", isolation.PLAIN)


@pytest.mark.parametrize("path", hostile.PATHS)
@pytest.mark.parametrize("name", list(hostile.FORGED_PASS))
def test_forged_passes_fail(path, name):
    attack(path, hostile.FORGED_PASS[name])


@pytest.mark.parametrize("path", hostile.PATHS)
def test_correct_answers_still_pass(path):
    result, _ = hostile.run(path, "", "return x + y", 5.0)
    assert result.passed, result.status


@pytest.mark.parametrize("path", hostile.PATHS)
def test_no_fork_bomb_setsid_escape_or_memory_hog(path, tag):
    marker = f"/tmp/{tag}"
    for setup_and_body in (hostile.fork_bomb(tag), hostile.setsid_escape(marker), hostile.MEMORY_HOG):
        attack(path, setup_and_body)
    assert hostile.live_processes_with(tag) == []
    time.sleep(1.5)
    assert not os.path.exists(marker)


@pytest.mark.parametrize("path", hostile.PATHS)
def test_an_infinite_loop_times_out_within_the_contract(path):
    assert attack(path, hostile.INFINITE_LOOP).status == "timed out"


@pytest.mark.parametrize("path", hostile.PATHS)
def test_landlock_confines_files_tcp_and_signals(path, tag):
    if bootstrap.landlock_abi() < 6:
        pytest.skip("needs Landlock ABI 6 (Linux 6.12) for TCP and signal scoping")
    targets = [os.path.join(hostile.PROJECT, tag), f"/tmp/{tag}"]
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.setblocking(False)
        for attack_ in (hostile.file_write(targets), hostile.read_files(hostile.secret_files()),
                        hostile.socket_connect(listener.getsockname()[1]), hostile.signal_process(os.getpid())):
            attack(path, attack_)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert [t for t in targets if os.path.exists(t)] == []


@pytest.mark.parametrize("path", hostile.PATHS)
def test_landlock_keeps_the_parent_environment_out_of_reach(path):
    if bootstrap.landlock_abi() < 1:
        pytest.skip("no Landlock in this kernel")
    report = hostile.env_read_in_a_fresh_host(path, isolation.PLAIN)
    assert report["control"] == 5 and not report["passed"], report["status"]
