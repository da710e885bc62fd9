import glob
import os
import sysconfig

import pytest

from beam_jobs.train_tokenizer import train

# A model small enough that a forward pass takes milliseconds, with every V3 part present.
SMALL_MODEL = dict(vocab_size=512, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                   num_hidden_layers=2, first_k_dense_replace=1, num_attention_heads=2, q_lora_rank=16,
                   kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8, n_routed_experts=8,
                   n_shared_experts=1, num_experts_per_tok=2, n_group=4, topk_group=2,
                   max_position_embeddings=512, num_nextn_predict_layers=1, initializer_range=0.02)


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
