"""`seekforge run | pipeline | lineage`: the stage runtime on the command line."""

import os

from stages import artifacts, pipeline, runtime, tracking
from stages import config as config_lib


def _common(p):
    p.add_argument("--config", required=True, help="a preset YAML file, e.g. configs/tiny.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set dedup.threshold=0.7 (repeatable)")
    p.add_argument("--force", action="store_true",
                   help="rerun even if a complete output with the same key exists (an unreadable resume "
                        "checkpoint is then discarded too)")


def register(subparsers) -> None:
    run = subparsers.add_parser("run", help="run one stage (skipped when its output is already complete)")
    run.add_argument("stage", help="stage name: " + ", ".join(pipeline.BY_NAME))
    _common(run)
    run.add_argument("--input", action="append", default=[], metavar="STAGE=DIR",
                     help="use this published output instead of the upstream stage's latest")
    run.add_argument("--pipeline-run", default=None, help="pipeline run id to tag (default: a new one)")
    run.add_argument("--result-file", default=None, metavar="PATH",
                     help="write the outcome as JSON here (stage, uri, run_id, cache_key, digest, cached): "
                          "what Airflow reads")
    run.set_defaults(handler=run_command)

    pipe = subparsers.add_parser("pipeline", help="run the stages in order, without Airflow")
    _common(pipe)
    pipe.add_argument("--until", default=None, help="stop after this stage")
    pipe.set_defaults(handler=pipeline_command)

    lineage = subparsers.add_parser("lineage", help="the chain of MLflow runs behind a run")
    lineage.add_argument("run_id")
    lineage.set_defaults(handler=lineage_command)


def result_record(output: artifacts.Output, pipeline_run: str | None) -> dict:
    return {"stage": output.stage, "uri": output.uri, "run_id": output.run_id, "cache_key": output.key,
            "digest": output.digest, "cached": output.cached, "artifact": output.manifest.get("artifact"),
            "pipeline_run": pipeline_run or output.manifest.get("pipeline_run")}


def run_command(args) -> int:
    pipeline.get(args.stage)   # an unknown stage is named before the config is read
    cfg = config_lib.load(args.config, args.set)
    explicit = {}
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--input {item!r}: expected STAGE=DIR")
        explicit[name] = path
    output = runtime.run_stage(args.stage, cfg, force=args.force, pipeline_run=args.pipeline_run,
                               explicit_inputs=explicit)
    if args.result_file:
        os.makedirs(os.path.dirname(os.path.abspath(args.result_file)), exist_ok=True)
        artifacts.write_json_atomic(args.result_file, result_record(output, args.pipeline_run))
    print(output.uri)
    return 0


def pipeline_command(args) -> int:
    cfg = config_lib.load(args.config, args.set)
    outputs = runtime.run_pipeline(cfg, until=args.until, force=args.force)
    for name, output in outputs.items():
        print(f"{name:10s} {output.uri}  run {output.run_id}{'  (cached)' if output.cached else ''}")
    return 0


def lineage_command(args) -> int:
    for depth, run in runtime.lineage(args.run_id):
        tags = run.data.tags
        inputs = ", ".join(f"{d.dataset.name}" for d in (run.inputs.dataset_inputs if run.inputs else []))
        forced = "  forced" if tags.get(tracking.TAG_FORCED) else ""
        print(f"{'  ' * depth}{run.info.run_id}  {tags.get(tracking.TAG_STAGE, '?'):10s} "
              f"key {tags.get(tracking.TAG_CACHE_KEY, '?')}  pipeline_run {tags.get(tracking.TAG_PIPELINE_RUN, '?')}  "
              f"{run.info.status}{forced}  inputs: {inputs or '-'}")
    return 0
