"""The artifact store: its layout, atomic publishing, integrity checks and the per-key lock.

    {artifacts}/{pipeline}/{stage}/{cache_key}/      a published output (manifest.json inside)
    {artifacts}/{pipeline}/{stage}/.tmp-{key}-{pid}/ a stage being written (never read)
    {artifacts}/{pipeline}/{stage}/.work-{key}/      state kept across attempts (checkpoints)
    {artifacts}/{pipeline}/{stage}/.lock-{key}       held while a run with that key executes
    {artifacts}/{pipeline}/{stage}/LATEST.json       the last published output of the stage

A stage writes into its temporary directory; only a complete output is renamed into place,
so a failed or killed stage leaves nothing that looks published. The manifest lists every
file with its size and sha256, so a published output that was changed or truncated later
is detected before anything reads it. Local paths for now (a rename is atomic there);
object stores need a copy-then-marker variant."""

import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time

MANIFEST = "manifest.json"
LATEST = "LATEST.json"


class CorruptOutput(ValueError):
    """A published output whose files no longer match its manifest."""


class AlreadyRunning(RuntimeError):
    """Another process holds the lock of this stage and cache key."""


@dataclasses.dataclass(frozen=True)
class Output:
    """A published stage output: where it is, what made it, and its manifest."""
    stage: str
    uri: str
    key: str
    digest: str
    run_id: str
    manifest: dict
    cached: bool = False          # returned by a cache hit rather than made by this run

    @classmethod
    def load(cls, directory: str) -> "Output":
        path = os.path.join(directory, MANIFEST)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{directory} is not a published stage output (no {MANIFEST})")
        try:
            with open(path) as f:
                m = json.load(f)
            return cls(m["stage"], os.path.abspath(directory), m["cache_key"], m["digest"], m["run_id"], m)
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise CorruptOutput(f"{path}: not a stage manifest ({e})") from None

    @property
    def results(self) -> dict:
        return self.manifest.get("results", {})

    def path(self, relative: str) -> str:
        return os.path.join(self.uri, relative)

    def verify(self, content: bool = True) -> None:
        """Every file the manifest lists is there with its recorded size (and sha256)."""
        files = self.manifest.get("files")
        if files is None:
            raise CorruptOutput(f"{self.uri}: the manifest lists no files (written by an older seekforge); "
                                f"rerun stage {self.stage!r} with --force")
        for relative, expected in sorted(files.items()):
            path = self.path(relative)
            if not os.path.isfile(path):
                raise CorruptOutput(f"{path}: missing from the published output of stage {self.stage!r}")
            size = os.path.getsize(path)
            if size != expected["bytes"]:
                raise CorruptOutput(f"{path}: {size} bytes, the manifest recorded {expected['bytes']} "
                                    "(truncated or changed after publishing)")
            if content and file_digest(path) != expected["sha256"]:
                raise CorruptOutput(f"{path}: content differs from the manifest's sha256 (changed after publishing)")


def stage_root(artifacts: str, pipeline: str, stage: str) -> str:
    return os.path.join(os.path.abspath(artifacts), pipeline, stage)


def published(root: str, key: str) -> Output | None:
    directory = os.path.join(root, key)
    return Output.load(directory) if os.path.exists(os.path.join(directory, MANIFEST)) else None


def latest(root: str) -> Output | None:
    path = os.path.join(root, LATEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        key = json.load(f)["cache_key"]
    return published(root, key)


def set_latest(root: str, output: Output) -> None:
    path = os.path.join(root, LATEST)
    record = {"cache_key": output.key, "run_id": output.run_id, "uri": output.uri}
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f) == record:
                return  # nothing to write
    write_json_atomic(path, record)


def write_json_atomic(path: str, obj) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(root: str) -> list[str]:
    """Temporary directories of stage processes that no longer exist (killed ones)."""
    removed = []
    if not os.path.isdir(root):
        return removed
    for name in os.listdir(root):
        if name.startswith(".tmp-"):
            try:
                pid = int(name.rsplit("-", 1)[1])
            except ValueError:
                continue
            if not process_alive(pid):
                shutil.rmtree(os.path.join(root, name), ignore_errors=True)
                removed.append(name)
    return removed


def work_dir(root: str, key: str) -> str:
    """{root}/.work-{key}/: state a stage keeps between attempts at the same key (the
    stage creates it if it needs one)."""
    return os.path.join(root, f".work-{key}")


def temporary_dir(root: str, key: str) -> str:
    path = os.path.join(root, f".tmp-{key}-{os.getpid()}")
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


def publish(temporary: str, root: str, key: str) -> str:
    """Rename the finished temporary directory into place (replacing an older output
    with the same key on --force)."""
    final = os.path.join(root, key)
    if os.path.exists(final):
        retired = f"{final}.replaced-{os.getpid()}"
        os.rename(final, retired)
        os.rename(temporary, final)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        os.rename(temporary, final)
    return final


class KeyLock:
    """An exclusive lock on one stage and cache key (flock on {root}/.lock-{key}), so a
    second run with the same key fails at once instead of sharing the temporary and work
    directories of the first. The kernel drops the lock when its holder dies."""

    def __init__(self, root: str, stage: str, key: str):
        self.path, self.stage, self.key, self._file = os.path.join(root, f".lock-{key}"), stage, key, None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise AlreadyRunning(f"stage {self.stage!r} with cache key {self.key} is already running ({holder}); "
                                 f"wait for it to finish, then rerun (lock: {self.path})") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc):
        self._file.close()   # releases the flock; the file stays (removing it would race a waiting run)
        return False


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def inventory(directory: str, exclude=(MANIFEST,)) -> dict[str, dict]:
    """{relative path: {"bytes", "sha256"}} of every file under `directory`."""
    files = {}
    for dirpath, _, names in os.walk(directory):
        for name in names:
            path = os.path.join(dirpath, name)
            relative = os.path.relpath(path, directory)
            if relative not in exclude:
                files[relative] = {"bytes": os.path.getsize(path), "sha256": file_digest(path)}
    return dict(sorted(files.items()))


def files_digest(files: dict[str, dict], include=None) -> str:
    """sha256 over (relative path, sha256) of the listed files (all, or those `include`
    accepts), in sorted order: the identity of content spread over several files."""
    h = hashlib.sha256()
    for relative, entry in sorted(files.items()):
        if include is None or include(relative):
            h.update(f"{relative}\0{entry['sha256']}\n".encode())
    return h.hexdigest()
