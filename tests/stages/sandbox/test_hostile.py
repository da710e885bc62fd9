"""The hostile-submission suite (issue 13): every attack, through both the GRPO reward's
check and HumanEval's, must fail to pass, leave nothing behind on the host, and return
within timeout + 1 s. Runs in this machine's default isolation (namespaces where the
probe allows them); test_plain_mode.py repeats what the fallback also contains."""

import os
import socket
import time

import pytest

from stages.posttrain import rewards
from stages.sandbox import probe
from tests.stages.sandbox import hostile

TIMEOUT = 2.0
CONTRACT = TIMEOUT + 1.0        # issue 13: every call returns within timeout + 1 s


def attack(path, setup_and_body, timeout=TIMEOUT):
    result, seconds = hostile.run(path, *setup_and_body, timeout=timeout)
    assert seconds < timeout + 1.0, f"took {seconds:.2f} s: {result.status}"
    assert not result.passed, result.status
    return result


def namespaces_only():
    if probe.isolation_mode() != "namespaces":
        pytest.skip("contained only with namespaces; this machine falls back to plain processes")


@pytest.mark.parametrize("path", hostile.PATHS)
@pytest.mark.parametrize("name", list(hostile.FORGED_PASS))
def test_forged_passes_fail(path, name):
    attack(path, hostile.FORGED_PASS[name])


def test_the_reward_scores_a_forged_pass_zero():
    setup, body = hostile.FORGED_PASS["always-equal object"]
    code = hostile.program("grpo", setup, body)
    problem = {"id": "hostile", "task": "code", "prompt": "add", "answer": "", "tests": hostile.GRPO_TESTS,
               "entry_point": "add"}
    assert rewards.accuracy_reward(f"<think>x</think><answer>{code}</answer>", problem) == 0.0


@pytest.mark.parametrize("path", hostile.PATHS)
def test_files_written_outside_do_not_appear(path, tag):
    namespaces_only()
    targets = [os.path.join(hostile.PROJECT, tag), f"/tmp/{tag}", f"/var/tmp/{tag}", f"/dev/shm/{tag}"]
    with pytest.raises(RuntimeError):
        hostile.unsandboxed(*hostile.file_write(targets))               # the writes themselves work...
    assert [t for t in targets if os.path.exists(t)] == targets
    for target in targets:
        os.remove(target)
    attack(path, hostile.file_write(targets))                           # ...but not from the sandbox
    assert [t for t in targets if os.path.exists(t)] == []


@pytest.mark.parametrize("path", hostile.PATHS)
def test_no_connection_reaches_a_host_listener(path):
    namespaces_only()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        assert hostile.unsandboxed(*hostile.socket_connect(port)) == 5
        listener.accept()[0].close()
        attack(path, hostile.socket_connect(port))
        with pytest.raises(BlockingIOError):
            listener.accept()


@pytest.mark.parametrize("path", hostile.PATHS)
def test_no_datagram_reaches_a_host_port(path):
    namespaces_only()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.setblocking(False)
        attack(path, hostile.udp_send(receiver.getsockname()[1]))
        with pytest.raises(BlockingIOError):
            receiver.recv(64)


@pytest.mark.parametrize("path", hostile.PATHS)
def test_the_project_and_the_benchmark_answers_are_not_readable(path):
    namespaces_only()
    assert hostile.unsandboxed(*hostile.read_files(hostile.secret_files())) == 5
    attack(path, hostile.read_files(hostile.secret_files()))


@pytest.mark.parametrize("path", hostile.PATHS)
def test_host_processes_cannot_be_signalled(path):
    assert hostile.unsandboxed(*hostile.signal_process(os.getpid())) == 5
    attack(path, hostile.signal_process(os.getpid()))


@pytest.mark.parametrize("path", hostile.PATHS)
def test_a_fork_bomb_is_bounded_and_leaves_nothing(path, tag):
    result = attack(path, hostile.fork_bomb(tag))
    assert hostile.live_processes_with(tag) == [], result.status


@pytest.mark.parametrize("path", hostile.PATHS)
def test_a_setsid_grandchild_dies_with_the_sandbox(path, tag):
    marker = f"/tmp/{tag}"
    result = attack(path, hostile.setsid_escape(marker))
    assert hostile.live_processes_with(marker) == [], result.status
    time.sleep(1.5)                                        # it would have written by now
    assert not os.path.exists(marker)


@pytest.mark.parametrize("path", hostile.PATHS)
def test_a_memory_hog_fails(path):
    status = attack(path, hostile.MEMORY_HOG).status
    assert "MemoryError" in status or status == "timed out", status    # timed out: a very loaded machine


@pytest.mark.parametrize("path", hostile.PATHS)
@pytest.mark.parametrize("loop", [hostile.INFINITE_LOOP, hostile.SLEEP_FOREVER], ids=["busy", "sleep"])
def test_an_infinite_loop_times_out_within_the_contract(path, loop):
    result = attack(path, loop)
    assert result.status == "timed out"
    assert result.seconds < CONTRACT
