"""What post-training stages read from upstream outputs: the posttrain_data files, the
chat template over the pipeline's tokenizer, and trained models."""

import json
import os

from stages.artifacts import Output
from stages.data_common import tokenizer_file
from stages.posttrain.chat import ChatTemplate


def read_jsonl(path: str) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{number}: not a JSON object ({e.msg})") from None
    return records


def data(output: Output, name: str) -> list[dict]:
    """One of posttrain_data's files by its results key (sft_train, prompts_held_out, ...)."""
    relative = output.manifest["results"].get(name)
    if not relative:
        raise ValueError(f"the output of stage {output.stage!r} at {output.uri} publishes no {name!r}")
    return read_jsonl(output.path(relative))


def chat_template(tokenizer_output: Output) -> ChatTemplate:
    from tokenizers import Tokenizer

    return ChatTemplate(Tokenizer.from_file(tokenizer_file(tokenizer_output)))


def model_dir(output: Output) -> str:
    return output.path(output.manifest["results"]["model"])


def checkpoint(output: Output) -> str:
    return output.path(output.manifest["results"]["checkpoint"])


def load_model(output: Output, dtype: str | None = None):
    """The trained model an upstream stage exported (config.json + Keras weights)."""
    from model.config import ModelConfig
    from model.transformer import DeepSeekV3CausalLM

    model = DeepSeekV3CausalLM(ModelConfig.from_hf(model_dir(output)), dtype=dtype)
    model.load_weights(os.path.join(model_dir(output), "model.weights.h5"))
    return model
