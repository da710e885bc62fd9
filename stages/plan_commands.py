"""`seekforge plan ...`: size a parallel layout before anything runs: memory per device,
all-to-all volume, pipeline bubbles (simulated) and an estimated step time."""

import json
import os

from model.config import PRESETS
from stages.model_commands import load_config

BUILTIN_COSTS = {"h200-small": os.path.join(os.path.dirname(__file__), "planning", "h200_small_costs.json")}


def register(subparsers) -> None:
    from stages.planning.devices import DEVICES
    from stages.planning.precision import RECIPES, RECOMPUTE
    from stages.planning.schedules import SCHEDULES

    plan = subparsers.add_parser(
        "plan", help="plan a parallel layout: memory per device, all-to-all volume, bubbles, step time",
        description=" ".join(__doc__.split()).split(": ", 1)[1])
    plan.add_argument("preset", help=f"a preset ({', '.join(PRESETS)}) or a path to a HF config.json")
    plan.add_argument("--gpus", type=int, required=True, help="number of GPUs")
    plan.add_argument("--ep", type=int, default=1, help="expert-parallel degree (default 1)")
    plan.add_argument("--pp", type=int, default=1, help="pipeline stages (default 1)")
    plan.add_argument("--dp", default="auto", help="data-parallel degree: auto (= gpus / pp, TP = 1) or a number")
    plan.add_argument("--zero", type=int, default=1, choices=[0, 1, 2, 3], help="ZeRO stage (default 1)")
    plan.add_argument("--micro-batches", type=int, default=None,
                      help="micro-batches per pipeline per step (default: global batch / (dp x micro-batch size))")
    plan.add_argument("--micro-batch-size", type=int, default=1, help="sequences per micro-batch (default 1)")
    plan.add_argument("--seq-len", type=int, default=4096, help="tokens per sequence (default 4096)")
    plan.add_argument("--global-batch", type=int, default=15360, help="sequences per step (default 15360, V3's)")
    plan.add_argument("--schedule", default="dualpipe", choices=SCHEDULES, help="pipeline schedule (default dualpipe)")
    plan.add_argument("--device", default="h800", choices=sorted(DEVICES), help="accelerator (default h800)")
    plan.add_argument("--gpus-per-node", type=int, default=8, help="GPUs per node (default 8)")
    plan.add_argument("--recipe", default="deepseek-v3", choices=sorted(RECIPES),
                      help="state dtypes and activation caching (default deepseek-v3, the paper's §3.3)")
    plan.add_argument("--recompute", nargs="?", const="full", default=None, choices=RECOMPUTE,
                      help="activation recomputation; bare --recompute means full (default: the recipe's)")
    plan.add_argument("--costs", default=None,
                      help=f"per-layer costs JSON (or {', '.join(BUILTIN_COSTS)}); default: a roofline estimate")
    plan.add_argument("--mfu", type=float, default=None,
                      help="for the roofline estimate: assumed share of the BF16 dense peak (default 0.40)")
    plan.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    plan.add_argument("--timeline", metavar="FILE", default=None,
                      help="write the simulated schedule as a picture (PNG/SVG/PDF, like the V3 paper's Figure 5)")
    plan.set_defaults(handler=plan_command)


def _dp(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--dp must be 'auto' or an integer, got {value!r}") from None


def build_plan(args):
    from stages.planning.costs import load_costs
    from stages.planning.layout import ParallelLayout
    from stages.planning.plan import DEFAULT_MFU, make_plan
    from stages.planning.precision import get_recipe

    cfg = load_config(args.preset)
    layout = ParallelLayout(
        num_gpus=args.gpus, expert_parallel_size=args.ep, pipeline_parallel_size=args.pp,
        data_parallel_size=_dp(args.dp), zero_stage=args.zero, micro_batch_size=args.micro_batch_size,
        seq_len=args.seq_len, global_batch_size=args.global_batch, num_micro_batches=args.micro_batches,
        schedule=args.schedule, gpus_per_node=args.gpus_per_node)
    layout.validate(cfg)
    precision = get_recipe(args.recipe).with_recompute(args.recompute)
    costs = None
    if args.costs:
        if args.mfu is not None:
            raise ValueError("--mfu applies to the roofline estimate only; leave it out with --costs")
        costs = load_costs(BUILTIN_COSTS.get(args.costs, args.costs), cfg, args.seq_len)
    return make_plan(cfg, layout, precision, args.device, costs=costs,
                     mfu=DEFAULT_MFU if args.mfu is None else args.mfu, name=args.preset)


def plan_command(args) -> int:
    from stages.planning.report import format_plan

    if args.timeline:
        directory = os.path.dirname(os.path.abspath(args.timeline))
        if not os.path.isdir(directory):
            raise FileNotFoundError(f"--timeline {args.timeline}: directory {directory} does not exist")
    plan = build_plan(args)
    if args.timeline:
        from stages.planning.picture import draw_timeline

        middle = plan.step.chunks[len(plan.step.chunks) // 2]
        draw_timeline(plan.step.timeline, args.timeline,
                      title=f"{args.preset}: {args.schedule}, PP {args.pp}, {plan.layout.num_micro_batches} "
                            f"micro-batches (simulated step, {plan.step.pipeline_seconds:.2f} s)",
                      pair_split=(middle.forward, middle.backward))
    if args.json:
        print(json.dumps(plan.as_dict()))
    else:
        print(format_plan(plan))
        if args.timeline:
            print(f"timeline picture: {args.timeline}")
    return 0
