import glob
import os
import sysconfig

import pytest

from beam_jobs.train_tokenizer import train
from tests.stages.trainer.conftest import MODEL as TRAINER_MODEL

# the trainer tests' model, with room for the test tokenizer's vocabulary and longer rows
SMALL_MODEL = {**TRAINER_MODEL, "vocab_size": 512, "max_position_embeddings": 512}


@pytest.fixture(scope="session")
def tokenizer():
    """A 512-token BPE with the project's special tokens, trained on a few stdlib files."""
    files = sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "json", "*.py")))
    texts = [open(f, encoding="utf-8").read() for f in files] + ["What is 3 + 4? 7 12 345 answer"] * 10
    return train(texts, vocab_size=512)


@pytest.fixture(scope="session")
def template(tokenizer):
    from stages.posttrain.chat import ChatTemplate

    return ChatTemplate(tokenizer)
