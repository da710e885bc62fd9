"""Multi-host JAX: one process per host, joined by jax.distributed before any JAX
computation, so jax.devices() is every device of every process and one Mesh spans them.

Where the settings come from (the environment, read once at start-up):
- SEEKFORGE_NUM_PROCESSES: how many processes; unset or 1 = one process, nothing to do.
- SEEKFORGE_PROCESS_ID: this process's id in [0, n); unset: JOB_COMPLETION_INDEX, which
  Kubernetes sets in every pod of an Indexed Job (and so of a JobSet).
- SEEKFORGE_COORDINATOR_ADDRESS: host:port of process 0's coordinator service, e.g. the
  DNS name of index 0 under the job's headless service
  (`NAME-workers-0-0.NAME:8476` for a JobSet, dags/container_specs.jobset_manifest).
- SEEKFORGE_INITIALIZATION_TIMEOUT: seconds to wait for every process to join (300).

    from stages.trainer import multihost
    multihost.initialize_from_environment()   # first thing, before jax.devices()
"""

import dataclasses
import os
import re
from collections.abc import Mapping

NUM_PROCESSES = "SEEKFORGE_NUM_PROCESSES"
PROCESS_ID = "SEEKFORGE_PROCESS_ID"
COORDINATOR_ADDRESS = "SEEKFORGE_COORDINATOR_ADDRESS"
INITIALIZATION_TIMEOUT = "SEEKFORGE_INITIALIZATION_TIMEOUT"
JOB_COMPLETION_INDEX = "JOB_COMPLETION_INDEX"        # Kubernetes Indexed Jobs
COORDINATOR_PORT = 8476                              # any free port works; all processes must agree

# host:port, host a DNS name, an IPv4 address or a bracketed IPv6 address
_ADDRESS = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):(\d{1,5})$")


class MultihostError(ValueError):
    """A missing or malformed multi-host setting; the message names the variable."""


@dataclasses.dataclass(frozen=True)
class MultihostConfig:
    num_processes: int = 1
    process_id: int = 0
    coordinator_address: str | None = None      # host:port of process 0
    initialization_timeout: int = 300           # seconds

    def __post_init__(self):
        if self.num_processes < 1:
            raise MultihostError(f"{NUM_PROCESSES}: must be >= 1, got {self.num_processes}")
        if not 0 <= self.process_id < self.num_processes:
            raise MultihostError(f"{PROCESS_ID}: must be in [0, {self.num_processes}), got {self.process_id}")
        if self.num_processes > 1:
            if not self.coordinator_address:
                raise MultihostError(f"{COORDINATOR_ADDRESS} is not set (host:port of process 0), but "
                                     f"{NUM_PROCESSES} is {self.num_processes}")
            match = _ADDRESS.match(self.coordinator_address)
            if not match or not 0 < int(match.group(2)) < 65536:
                raise MultihostError(f"{COORDINATOR_ADDRESS}: expected host:port, got {self.coordinator_address!r}")
        if self.initialization_timeout < 1:
            raise MultihostError(f"{INITIALIZATION_TIMEOUT}: must be >= 1, got {self.initialization_timeout}")


def _integer(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise MultihostError(f"{name}: expected an integer, got {value!r}") from None


def from_environment(env: Mapping[str, str] | None = None) -> MultihostConfig:
    """The multi-host settings the environment holds (see the module docstring)."""
    env = os.environ if env is None else env
    num_processes = _integer(env, NUM_PROCESSES)
    coordinator = env.get(COORDINATOR_ADDRESS) or None
    if num_processes is None:
        if coordinator:   # half a configuration is a mistake, not a single-process run
            raise MultihostError(f"{COORDINATOR_ADDRESS} is set but {NUM_PROCESSES} is not")
        num_processes = 1
    process_id = 0
    if num_processes > 1:
        process_id = _integer(env, PROCESS_ID)
        if process_id is None:
            process_id = _integer(env, JOB_COMPLETION_INDEX)
        if process_id is None:
            raise MultihostError(f"neither {PROCESS_ID} nor {JOB_COMPLETION_INDEX} is set, but {NUM_PROCESSES} "
                                 f"is {num_processes}")
    timeout = _integer(env, INITIALIZATION_TIMEOUT)
    return MultihostConfig(num_processes, process_id, coordinator,
                           **({} if timeout is None else {"initialization_timeout": timeout}))


def initialize(config: MultihostConfig) -> bool:
    """Joins the processes (jax.distributed.initialize); True if it did, False for one
    process. Must run before anything asks JAX for devices or computes."""
    if config.num_processes == 1:
        return False
    import jax
    if jax.distributed.is_initialized():   # a second stage in the same process (seekforge pipeline)
        joined = (jax.process_count(), jax.process_index())
        if joined != (config.num_processes, config.process_id):
            raise MultihostError(f"JAX already joined {joined[0]} processes as process {joined[1]}; "
                                 f"cannot rejoin as process {config.process_id} of {config.num_processes}")
        return True
    # Cross-process collectives on CPU (tests, CPU-only clusters); GPUs use NCCL regardless.
    # gloo is JAX 0.10's default, not older releases'.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=config.coordinator_address, num_processes=config.num_processes,
                               process_id=config.process_id, initialization_timeout=config.initialization_timeout)
    return True


def initialize_from_environment(env: Mapping[str, str] | None = None) -> MultihostConfig:
    """initialize(from_environment(env)); returns the settings it used."""
    config = from_environment(env)
    initialize(config)
    return config
