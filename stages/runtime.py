"""The stage runtime (DESIGN.md, "the stage contract"): inputs from upstream outputs,
cache key, skip-if-complete, atomic publish with manifest.json, one MLflow run per
execution with params, inputs, metrics, artifacts and lineage tags."""

import dataclasses
import glob
import hashlib
import json
import os
import shutil
import sys
import time
import uuid

from stages import artifacts, registry, tracking
from stages.artifacts import Output
from stages.config import Config, flatten

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNTIME_FILES = [os.path.join(REPO_ROOT, "stages", f) for f in ("runtime.py", "artifacts.py", "config.py")]


@dataclasses.dataclass
class StageContext:
    """What a stage function gets: its config section, its upstream outputs and a
    temporary output directory that the runtime publishes if the function returns."""
    stage: str
    config: object
    full_config: Config
    inputs: dict[str, Output]
    output_dir: str
    beam_args: list[str]
    pipeline_run: str
    cache_key: str = ""
    # a directory kept across failed or killed attempts with the same cache key (training
    # checkpoints live here, so a rerun resumes); removed once the output is published
    work_dir: str = ""

    def log(self, message: str) -> None:
        print(f"[{self.stage}] {message}", file=sys.stderr, flush=True)


def new_pipeline_run() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def code_version(stage: registry.Stage) -> str:
    """Digest of the code that decides a stage's output: its module, the runtime and
    every Beam job module."""
    files = sorted(set(stage.code_files) | set(RUNTIME_FILES) | set(glob.glob(os.path.join(REPO_ROOT, "beam_jobs", "*.py"))))
    h = hashlib.sha256()
    for path in files:
        with open(path, "rb") as f:
            h.update(os.path.basename(path).encode() + b"\0" + f.read())
    return h.hexdigest()[:16]


def cache_key(stage: registry.Stage, section, input_digests: dict[str, str]) -> str:
    material = {"stage": stage.name, "config": dataclasses.asdict(section),
                "inputs": dict(sorted(input_digests.items())), "code": code_version(stage)}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:20]


def resolve_inputs(stage: registry.Stage, config: Config, upstream: dict[str, Output],
                   explicit: dict[str, str]) -> dict[str, Output]:
    resolved = {}
    for name in stage.inputs:
        if name in explicit:
            resolved[name] = Output.load(explicit[name])
        elif name in upstream:
            resolved[name] = upstream[name]
        else:
            found = artifacts.latest(artifacts.stage_root(config.pipeline.artifacts, config.pipeline.name, name))
            if found is None:
                raise FileNotFoundError(f"stage {stage.name!r} needs the output of {name!r}, and none is published "
                                        f"under {config.pipeline.artifacts}; run `seekforge run {name}` first or "
                                        f"pass --input {name}=DIR")
            resolved[name] = found
    unknown = set(explicit) - set(stage.inputs)
    if unknown:
        raise ValueError(f"--input {sorted(unknown)[0]}: stage {stage.name!r} has no such input "
                         f"(inputs: {', '.join(stage.inputs) or 'none'})")
    return resolved


def run_stage(name: str, config: Config, force: bool = False, pipeline_run: str | None = None,
              upstream: dict[str, Output] | None = None, explicit_inputs: dict[str, str] | None = None) -> Output:
    stage = registry.get(name)
    section = config[stage.section]
    pipeline_run = pipeline_run or new_pipeline_run()
    inputs = resolve_inputs(stage, config, upstream or {}, explicit_inputs or {})
    external = stage.external_inputs(section) if stage.external_inputs else {}
    digests = {**{n: o.digest for n, o in inputs.items()}, **{n: d for n, (_, d) in external.items()}}
    key = cache_key(stage, section, digests)
    root = artifacts.stage_root(config.pipeline.artifacts, config.pipeline.name, stage.name)

    done = artifacts.published(root, key)
    if done is not None and not force:
        print(f"[{name}] cache hit: {done.uri} (key {key}, MLflow run {done.run_id}); --force reruns it",
              file=sys.stderr, flush=True)
        artifacts.set_latest(root, done)
        return done

    os.makedirs(root, exist_ok=True)
    artifacts.remove_stale_temporaries(root)
    temporary = artifacts.temporary_dir(root, key)
    ml = tracking.mlflow()
    experiment = ml.set_experiment(config.pipeline.name)
    tracking.close_abandoned_runs(ml, experiment.experiment_id, name)
    upstream_runs = [inputs[n].run_id for n in stage.inputs]
    start = time.time()
    run = ml.start_run(run_name=f"{name} {pipeline_run}", tags={
        tracking.TAG_STAGE: name, tracking.TAG_PIPELINE_RUN: pipeline_run, tracking.TAG_CACHE_KEY: key,
        tracking.TAG_UPSTREAM: ",".join(upstream_runs), tracking.TAG_PROCESS: tracking.process_tag(),
        **tracking.airflow_tags()})
    try:
        ml.log_params({f"{stage.section}.{k}": v[:6000] for k, v in flatten(section).items()})
        for input_name, output in inputs.items():
            tracking.log_input(ml, f"{input_name}:{output.key}", output.uri, output.digest, input_name)
        for input_name, (uri, digest) in external.items():
            tracking.log_input(ml, input_name, uri, digest, input_name)
        work_dir = artifacts.work_dir(root, key)
        ctx = StageContext(name, section, config, inputs, temporary, list(config.pipeline.beam_args), pipeline_run,
                           key, work_dir)
        result = stage.fn(ctx) or {}
        digest = artifacts.directory_digest(temporary)
        manifest = {
            "stage": name, "cache_key": key, "run_id": run.info.run_id, "pipeline_run": pipeline_run,
            "digest": digest, "code_version": code_version(stage), "config": dataclasses.asdict(section),
            "inputs": {**{n: {"uri": o.uri, "digest": o.digest, "run_id": o.run_id, "cache_key": o.key}
                          for n, o in inputs.items()},
                       **{n: {"uri": uri, "digest": d} for n, (uri, d) in external.items()}},
            "results": result, "wall_seconds": round(time.time() - start, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with open(os.path.join(temporary, artifacts.MANIFEST), "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True, default=str)
        ml.log_metrics({**tracking.numeric_metrics(result), "wall_seconds": manifest["wall_seconds"]})
        ml.log_artifact(os.path.join(temporary, artifacts.MANIFEST))
        for small in _small_artifacts(temporary):
            ml.log_artifact(small, artifact_path=os.path.dirname(os.path.relpath(small, temporary)) or None)
        final = artifacts.publish(temporary, root, key)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        ml.end_run(status="FAILED")
        raise
    ml.end_run(status="FINISHED")
    shutil.rmtree(work_dir, ignore_errors=True)
    output = Output.load(final)
    artifacts.set_latest(root, output)
    print(f"[{name}] published {final} in {manifest['wall_seconds']:.1f}s (MLflow run {run.info.run_id})",
          file=sys.stderr, flush=True)
    return output


def _small_artifacts(directory: str, limit: int = 2_000_000) -> list[str]:
    """JSON files (job manifests, shard index) and the tokenizer: small, worth browsing."""
    out = []
    for dirpath, _, files in os.walk(directory):
        for name in files:
            path = os.path.join(dirpath, name)
            if name != artifacts.MANIFEST and name.endswith(".json") and os.path.getsize(path) <= limit:
                out.append(path)
    return sorted(out)


def run_pipeline(config: Config, until: str | None = None, force: bool = False) -> dict[str, Output]:
    pipeline_run = new_pipeline_run()
    outputs: dict[str, Output] = {}
    start = time.time()
    for stage in registry.order(until):
        outputs[stage.name] = run_stage(stage.name, config, force=force, pipeline_run=pipeline_run, upstream=outputs)
    print(f"pipeline {config.pipeline.name} run {pipeline_run}: {len(outputs)} stages in {time.time() - start:.1f}s",
          file=sys.stderr)
    return outputs


def lineage(run_id: str) -> list[tuple[int, object]]:
    """(depth, mlflow Run) for the run and every upstream run behind it, depth first."""
    ml = tracking.mlflow()
    client = ml.MlflowClient()
    chain, seen = [], set()

    def visit(rid: str, depth: int):
        run = client.get_run(rid)
        chain.append((depth, run))
        if rid in seen:
            return
        seen.add(rid)
        for parent in filter(None, run.data.tags.get(tracking.TAG_UPSTREAM, "").split(",")):
            visit(parent, depth + 1)

    visit(run_id, 0)
    return chain
