"""The stage runtime (DESIGN.md, "the stage contract"): typed inputs from upstream outputs,
verified before use; a derived cache key; skip-if-complete; one run per key at a time;
atomic publish with manifest.json; one MLflow run per execution with params, inputs,
metrics, artifacts and lineage tags."""

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
import uuid

from stages import artifacts, fingerprint, lineage_links, pipeline, termination, tracking
from stages.artifact_types import TYPES, Artifact, typed
from stages.artifacts import CorruptOutput, Output
from stages.config import Config, flatten
from stages.pipeline import StageSpec


@dataclasses.dataclass
class StageContext:
    """What a stage function gets: its config section (and the other sections it declared),
    its typed upstream outputs and a temporary output directory that the runtime publishes
    if the function returns."""
    stage: str
    config: object
    inputs: dict[str, Artifact]
    output_dir: str
    beam_args: list[str]
    pipeline_run: str
    pipeline_name: str
    cache_key: str = ""
    # a directory kept across failed or killed attempts with the same cache key (training
    # checkpoints live here, so a rerun resumes); removed once the output is published
    work_dir: str = ""
    force: bool = False                  # --force: an unreadable resume checkpoint is discarded
    sections: dict = dataclasses.field(default_factory=dict)   # the other sections it reads

    def section(self, name: str):
        """Another config section; only those the stage declares (they are in its key)."""
        if name not in self.sections:
            raise KeyError(f"stage {self.stage!r} reads config section {name!r} without declaring it in "
                           f"stages/pipeline.py (reads=...), so it would not be part of its cache key")
        return self.sections[name]

    def log(self, message: str) -> None:
        print(f"[{self.stage}] {message}", file=sys.stderr, flush=True)


def new_pipeline_run() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def code_modules(spec: StageSpec) -> list[str]:
    """The modules whose import closure decides the stage's output: the stage's own and
    the artifact loaders, through which it reads its inputs (a model loads through them)."""
    refs = [spec.run, spec.config] + ([spec.external_inputs] if spec.external_inputs else [])
    return sorted({ref.split(":")[0] for ref in refs} | {"stages.artifact_types"})


def cache_key(spec: StageSpec, config: Config, input_digests: dict[str, str]) -> tuple[str, dict]:
    """(key, material): a hash of every config section the stage reads, its inputs'
    content digests and the digest of the project code it imports."""
    code, modules = fingerprint.code_digest(*code_modules(spec))
    material = {"stage": spec.name, "sections": {name: dataclasses.asdict(config[name]) for name in spec.sections},
                "inputs": dict(sorted(input_digests.items())), "code": code}
    if "model.transformer" in fingerprint.module_closure(spec.run.split(":")[0]):
        # a model stage's numbers (and trainer: tf.distribute or the JAX mesh) follow the backend
        import keras

        material["keras_backend"] = keras.backend.backend()
    key = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:20]
    return key, {**material, "modules": modules}


def _verified(output: Output, config: Config) -> Output:
    """The output after checking its files against its manifest: sizes always, contents
    too unless pipeline.verify_inputs is "size" (hashing terabytes of shards at scale)."""
    output.verify(content=config.pipeline.verify_inputs == "sha256")
    return output


def resolve_inputs(spec: StageSpec, config: Config, upstream: dict[str, Output],
                   explicit: dict[str, str]) -> dict[str, Artifact]:
    unknown = set(explicit) - set(spec.inputs)
    if unknown:
        raise ValueError(f"--input {sorted(unknown)[0]}: stage {spec.name!r} has no such input "
                         f"(inputs: {', '.join(spec.inputs) or 'none'})")
    resolved = {}
    for name in spec.inputs:
        if name in upstream:   # published or verified a moment ago by this pipeline run
            resolved[name] = typed(upstream[name], pipeline.get(name).output)
            continue
        if name in explicit:
            output = Output.load(explicit[name])
        else:
            output = artifacts.latest(artifacts.stage_root(config.pipeline.artifacts, config.pipeline.name, name))
            if output is None:
                raise FileNotFoundError(f"stage {spec.name!r} needs the output of {name!r}, and none is published "
                                        f"under {config.pipeline.artifacts}; run `seekforge run {name}` first or "
                                        f"pass --input {name}=DIR")
        try:
            _verified(output, config)
        except CorruptOutput as e:
            raise CorruptOutput(f"input {name!r} of stage {spec.name!r} is corrupt: {e}; rebuild it with "
                                f"`seekforge run {name} --force`") from None
        resolved[name] = typed(output, pipeline.get(name).output if name in pipeline.BY_NAME else None)
    return resolved


def run_stage(stage: str | StageSpec, config: Config, force: bool = False, pipeline_run: str | None = None,
              upstream: dict[str, Output] | None = None, explicit_inputs: dict[str, str] | None = None) -> Output:
    """Run one stage (or return its published output when its key is complete)."""
    spec = stage if isinstance(stage, StageSpec) else pipeline.get(stage)
    name = spec.name
    section = config[spec.section]
    pipeline_run = pipeline_run or new_pipeline_run()
    inputs = resolve_inputs(spec, config, upstream or {}, explicit_inputs or {})
    external = spec.external(section)
    digests = {**{n: a.digest for n, a in inputs.items()}, **{n: d for n, (_, d) in external.items()}}
    key, material = cache_key(spec, config, digests)
    root = artifacts.stage_root(config.pipeline.artifacts, config.pipeline.name, name)

    done = artifacts.published(root, key)
    if done is not None and not force:
        try:
            _verified(done, config)
            print(f"[{name}] cache hit: {done.uri} (key {key}, MLflow run {done.run_id}); --force reruns it",
                  file=sys.stderr, flush=True)
            for n, a in inputs.items():
                made_from = done.manifest.get("inputs", {}).get(n, {}).get("run_id")
                if made_from and made_from != a.run_id:   # e.g. after a forced rerun upstream
                    print(f"[{name}] (made from {n} run {made_from}; {n}'s run {a.run_id} has the same content)",
                          file=sys.stderr, flush=True)
            artifacts.set_latest(root, done)
            return dataclasses.replace(done, cached=True)
        except CorruptOutput as e:
            print(f"[{name}] the published output for key {key} is corrupt ({e}); rebuilding it",
                  file=sys.stderr, flush=True)

    ml = tracking.mlflow(config.pipeline)   # a tracking server that does not answer fails here, before any work
    with artifacts.KeyLock(root, name, key):
        return _execute(ml, spec, config, section, key, material, root, inputs, external, pipeline_run, force,
                        replaces=done.run_id if done is not None else None)


def _execute(ml, spec, config, section, key, material, root, inputs, external, pipeline_run, force, replaces):
    name = spec.name
    artifacts.remove_stale_temporaries(root)
    temporary = artifacts.temporary_dir(root, key)
    work_dir = artifacts.work_dir(root, key)
    experiment = ml.set_experiment(config.pipeline.name)
    client = ml.MlflowClient()
    lineage_links.mark_experiment(client, experiment)
    tracking.close_abandoned_runs(ml, experiment.experiment_id, name)
    airflow = tracking.airflow_tags()
    tags = {tracking.TAG_STAGE: name, tracking.TAG_PIPELINE_RUN: pipeline_run, tracking.TAG_CACHE_KEY: key,
            tracking.TAG_UPSTREAM: ",".join(inputs[n].run_id for n in spec.inputs),
            tracking.TAG_PROCESS: tracking.process_tag(), **airflow}
    if force:
        tags[tracking.TAG_FORCED] = "true"
    if replaces:
        tags[tracking.TAG_REPLACES] = replaces

    def where(run_id: str) -> tuple[str, str]:
        return tracking.experiment_of(client, run_id, experiment.experiment_id), run_id
    tags[lineage_links.DESCRIPTION_TAG] = lineage_links.run_description(
        name, pipeline_run, {n: where(inputs[n].run_id) for n in spec.inputs}, airflow.get("airflow.url"), force,
        where(replaces) if replaces else None)
    start = time.time()
    run = ml.start_run(run_name=f"{name} {pipeline_run}", tags=tags)
    try:
        for section_name in spec.sections:
            ml.log_params({f"{section_name}.{k}": v[:6000] for k, v in flatten(config[section_name]).items()})
        for input_name, artifact in inputs.items():
            tracking.log_input(ml, f"{input_name}:{artifact.output.key}", artifact.uri, artifact.digest, input_name)
        for input_name, (uri, digest) in external.items():
            tracking.log_input(ml, input_name, uri, digest, input_name)
        ctx = StageContext(name, section, inputs, temporary, list(config.pipeline.beam_args), pipeline_run,
                           config.pipeline.name, key, work_dir, force,
                           {s: config[s] for s in spec.reads})
        result = spec.function()(ctx) or {}
        artifact_type = TYPES[spec.output]
        artifact_type.check_results(name, result)
        files = artifacts.inventory(temporary)
        manifest = {
            "stage": name, "artifact": spec.output, "cache_key": key, "run_id": run.info.run_id,
            "pipeline_run": pipeline_run, "digest": artifact_type.content_digest(temporary, result, files),
            "files": files, "key_material": material,
            "inputs": {**{n: {"uri": a.uri, "digest": a.digest, "run_id": a.run_id, "cache_key": a.output.key}
                          for n, a in inputs.items()},
                       **{n: {"uri": uri, "digest": d} for n, (uri, d) in external.items()}},
            "results": result, "wall_seconds": round(time.time() - start, 3), "forced": force,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        artifacts.write_json_atomic(os.path.join(temporary, artifacts.MANIFEST), manifest)
        ml.log_metrics({**tracking.numeric_metrics(result), "wall_seconds": manifest["wall_seconds"]})
        ml.log_artifact(os.path.join(temporary, artifacts.MANIFEST))
        for small in _small_artifacts(temporary):
            ml.log_artifact(small, artifact_path=os.path.dirname(os.path.relpath(small, temporary)) or None)
        final = artifacts.publish(temporary, root, key)
    except BaseException as e:
        shutil.rmtree(temporary, ignore_errors=True)
        stopped = isinstance(e, (KeyboardInterrupt, SystemExit)) or termination.requested() is not None
        ml.end_run(status="KILLED" if stopped else "FAILED")
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
    for spec in pipeline.order(until):
        outputs[spec.name] = run_stage(spec, config, force=force, pipeline_run=pipeline_run, upstream=outputs)
    print(f"pipeline {config.pipeline.name} run {pipeline_run}: {len(outputs)} stages in {time.time() - start:.1f}s",
          file=sys.stderr)
    return outputs


def lineage(run_id: str) -> list[tuple[int, object]]:
    """(depth, mlflow Run) for the run and every upstream run behind it, depth first."""
    ml = tracking.mlflow()
    client = ml.MlflowClient()
    chain, seen = [], set()

    def visit(rid: str, depth: int):
        run = tracking.get_run(client, rid)
        chain.append((depth, run))
        if rid in seen:
            return
        seen.add(rid)
        for parent in filter(None, run.data.tags.get(tracking.TAG_UPSTREAM, "").split(",")):
            visit(parent, depth + 1)

    visit(run_id, 0)
    return chain
