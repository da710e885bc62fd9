"""Stage `posttrain_evaluate`: every model of the post-training phase side by side on the
same held-out problems with the same settings: the pretrained model (extend_128k), SFT,
GRPO and the distilled student. Greedy answers and `samples` sampled answers each; mean
reward, accuracy and format compliance, and the student's KL to its teacher.

Outputs report.json and posttrain.png (the numbers also go to MLflow as metrics).
"""

import dataclasses
import json
import os

from stages.posttrain import upstream


@dataclasses.dataclass(frozen=True)
class PosttrainEvaluateConfig:
    problems: int = 128                 # held-out problems (0: all)
    samples: int = 4                    # sampled completions per problem, at `temperature`
    temperature: float = 1.0
    max_new_tokens: int = 64
    reward_functions: dict[str, float] = dataclasses.field(
        default_factory=lambda: {"accuracy": 1.0, "format": 1.0})
    seed: int = 0


def plot(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["models"])
    figure, axes = plt.subplots(figsize=(7, 3.5))
    width = 0.2
    for offset, (key, label) in enumerate((("greedy", "reward/accuracy"), ("greedy", "reward/format"),
                                           ("sampled", "reward/accuracy"), ("sampled", "reward/format"))):
        values = [report["models"][n][key].get(label, 0.0) for n in names]
        axes.bar([i + (offset - 1.5) * width for i in range(len(names))], values, width,
                 label=f"{label.split('/')[1]} ({key})")
    axes.set_xticks(range(len(names)), names)
    axes.set_ylabel("held-out rate")
    axes.set_ylim(0, 1)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run(ctx):
    from stages import pipeline, tracking
    from stages.distill import teacher_kl
    from stages.posttrain.policy_eval import evaluate_policy
    from stages.sft import encode_all

    cfg = ctx.config
    template = upstream.chat_template(ctx.inputs["tokenizer"])
    problems = ctx.inputs["posttrain_data"].records("prompts_held_out")
    problems = problems[:cfg.problems] if cfg.problems else problems
    report = {"problems": len(problems), "models": {}}
    models = {}
    for name in pipeline.models_read_by(ctx.stage):
        ctx.log(f"{name}: {len(problems)} held-out problems, greedy and {cfg.samples} samples each")
        model = models[name] = ctx.inputs[name].load()
        report["models"][name] = {
            "parameters": model.count_params(),
            "greedy": evaluate_policy(model, template, problems, cfg.reward_functions, cfg.max_new_tokens),
            "sampled": evaluate_policy(model, template, problems, cfg.reward_functions, cfg.max_new_tokens,
                                       cfg.samples, cfg.temperature, cfg.seed)}
    # the student against its teacher, on the teacher's own greedy answers
    teacher, student = models["grpo"], models["distill"]
    outs = teacher.generate([template.encode_prompt(p["prompt"]) for p in problems], cfg.max_new_tokens)
    rows = encode_all(template, [{"id": p["id"], "messages": [
        {"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": template.decode_reply(o)}]}
        for p, o in zip(problems, outs)], 4 * cfg.max_new_tokens)
    report["models"]["distill"]["teacher_kl"] = teacher_kl(student, teacher, rows)
    with open(os.path.join(ctx.output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    plot(report, os.path.join(ctx.output_dir, "posttrain.png"))
    tracking.mlflow().log_artifact(os.path.join(ctx.output_dir, "posttrain.png"))
    return {"report": "report.json", "plot": "posttrain.png", **report}
