"""The artifact store layout and atomic publishing.

    {artifacts}/{pipeline}/{stage}/{cache_key}/      a published output (manifest.json inside)
    {artifacts}/{pipeline}/{stage}/.tmp-{key}-{pid}/ a stage being written (never read)
    {artifacts}/{pipeline}/{stage}/.work-{key}/      state kept across attempts (checkpoints)
    {artifacts}/{pipeline}/{stage}/LATEST.json       the last published output of the stage

A stage writes into its temporary directory; only a complete output is renamed into place,
so a failed or killed stage leaves nothing that looks published. Local paths for now (a
rename is atomic there); object stores need a copy-then-marker variant."""

import dataclasses
import hashlib
import json
import os
import shutil

MANIFEST = "manifest.json"
LATEST = "LATEST.json"


@dataclasses.dataclass(frozen=True)
class Output:
    """A published stage output, as downstream stages see it."""
    stage: str
    uri: str
    key: str
    digest: str
    run_id: str
    manifest: dict

    @classmethod
    def load(cls, directory: str) -> "Output":
        path = os.path.join(directory, MANIFEST)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{directory} is not a published stage output (no {MANIFEST})")
        with open(path) as f:
            m = json.load(f)
        return cls(m["stage"], os.path.abspath(directory), m["cache_key"], m["digest"], m["run_id"], m)

    def path(self, relative: str) -> str:
        return os.path.join(self.uri, relative)


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
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f).get("cache_key") == output.key:
                return  # nothing to write
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"cache_key": output.key, "run_id": output.run_id, "uri": output.uri}, f)
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


def file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def directory_digest(directory: str, exclude=(MANIFEST,)) -> str:
    """sha256 over (relative path, content digest) of every file, in sorted order."""
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(directory)):
        for name in sorted(files):
            relative = os.path.relpath(os.path.join(dirpath, name), directory)
            if relative in exclude:
                continue
            h.update(relative.encode() + b"\0" + file_digest(os.path.join(dirpath, name)).encode() + b"\n")
    return h.hexdigest()
