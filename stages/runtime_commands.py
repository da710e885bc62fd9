"""`seekforge run | pipeline | lineage`: the stage runtime on the command line."""


from stages import config as config_lib
from stages import registry, runtime, tracking


def _common(p):
    p.add_argument("--config", required=True, help="a preset YAML file, e.g. configs/tiny.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set dedup.threshold=0.7 (repeatable)")
    p.add_argument("--force", action="store_true", help="rerun even if a complete output with the same key exists")


def register(subparsers) -> None:
    run = subparsers.add_parser("run", help="run one stage (skipped when its output is already complete)")
    run.add_argument("stage", help="stage name: " + ", ".join(registry.STAGE_MODULES).replace("stages.", ""))
    _common(run)
    run.add_argument("--input", action="append", default=[], metavar="STAGE=DIR",
                     help="use this published output instead of the upstream stage's latest")
    run.add_argument("--pipeline-run", default=None, help="pipeline run id to tag (default: a new one)")
    run.set_defaults(handler=run_command)

    pipeline = subparsers.add_parser("pipeline", help="run the stages in order, without Airflow")
    _common(pipeline)
    pipeline.add_argument("--until", default=None, help="stop after this stage")
    pipeline.set_defaults(handler=pipeline_command)

    lineage = subparsers.add_parser("lineage", help="the chain of MLflow runs behind a run")
    lineage.add_argument("run_id")
    lineage.set_defaults(handler=lineage_command)


def _load(args):
    registry.load_stages()   # registers the config sections
    return config_lib.load(args.config, args.set)


def run_command(args) -> int:
    cfg = _load(args)
    explicit = {}
    for item in args.input:
        name, sep, path = item.partition("=")
        if not sep:
            raise ValueError(f"--input {item!r}: expected STAGE=DIR")
        explicit[name] = path
    output = runtime.run_stage(args.stage, cfg, force=args.force, pipeline_run=args.pipeline_run,
                               explicit_inputs=explicit)
    print(output.uri)
    return 0


def pipeline_command(args) -> int:
    cfg = _load(args)
    outputs = runtime.run_pipeline(cfg, until=args.until, force=args.force)
    for name, output in outputs.items():
        print(f"{name:10s} {output.uri}  run {output.run_id}")
    return 0


def lineage_command(args) -> int:
    for depth, run in runtime.lineage(args.run_id):
        tags = run.data.tags
        inputs = ", ".join(f"{d.dataset.name}" for d in (run.inputs.dataset_inputs if run.inputs else []))
        print(f"{'  ' * depth}{run.info.run_id}  {tags.get(tracking.TAG_STAGE, '?'):10s} "
              f"key {tags.get(tracking.TAG_CACHE_KEY, '?')}  pipeline_run {tags.get(tracking.TAG_PIPELINE_RUN, '?')}  "
              f"{run.info.status}  inputs: {inputs or '-'}")
    return 0
