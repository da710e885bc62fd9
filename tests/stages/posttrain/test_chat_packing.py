"""The chat template and SFT packing: the loss sees assistant tokens only, and packed
conversations train exactly as if each were alone."""

import numpy as np
import pytest
import tensorflow as tf

from model.config import ModelConfig
from model.losses import shifted_cross_entropy
from model.transformer import DeepSeekV3CausalLM
from stages.posttrain.packing import pack
from tests.stages.posttrain.conftest import SMALL_MODEL

CONVERSATION = [{"role": "user", "content": "What is 3 + 4?"},
                {"role": "assistant", "content": "<think>3 + 4 = 7</think><answer>7</answer>"},
                {"role": "user", "content": "And 7 + 5?"},
                {"role": "assistant", "content": "<think>7 + 5 = 12</think><answer>12</answer>"}]


def test_template_is_deepseek_layout(template):
    ids, mask = template.encode_conversation(CONVERSATION)
    t = template
    assert ids[0] == t.bos_id and ids[1] == t.user_id
    assert ids.count(t.user_id) == 2 and ids.count(t.assistant_id) == 2 and ids.count(t.eos_id) == 2
    # the loss covers each reply and its EOS, nothing of the user's turns or the markers
    marked = [i for i, m in zip(ids, mask) if m]
    assert template.tokenizer.decode(marked, skip_special_tokens=False) == (
        "<think>3 + 4 = 7</think><answer>7</answer><｜end▁of▁sentence｜>"
        "<think>7 + 5 = 12</think><answer>12</answer><｜end▁of▁sentence｜>")
    assert not any(m for i, m in zip(ids, mask) if i in (t.bos_id, t.user_id, t.assistant_id))
    # <think> is one special token, not parsed from text pieces
    assert template.tokenizer.token_to_id("<think>") in ids
    # a generation prompt is the conversation up to the assistant marker
    prompt = template.encode_prompt("What is 3 + 4?")
    assert prompt == ids[:len(prompt)] and prompt[-1] == t.assistant_id


def test_template_rejects_malformed_conversations(template):
    with pytest.raises(ValueError, match="conversation c7: message 1 should be a assistant"):
        template.encode_conversation([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "conversation c7")
    with pytest.raises(ValueError, match="user/assistant pairs"):
        template.encode_conversation([{"role": "user", "content": "a"}])


def test_decode_reply_stops_at_eos_and_keeps_reasoning_markers(template):
    ids = template.text_ids("<think>x</think><answer>1</answer>")
    assert template.decode_reply([*ids, template.eos_id, *ids]) == "<think>x</think><answer>1</answer>"


def test_pack_first_fit_segments_positions_and_drops():
    samples = [([5] * 6, [0, 0, 1, 1, 1, 1]), ([6] * 9, [0] * 4 + [1] * 5), ([7] * 3, [0, 1, 1]),
               ([8] * 20, [1] * 20)]
    rows = pack(samples, seq_len=10, pad_id=2)
    assert rows.samples == 3 and rows.dropped_too_long == 1
    np.testing.assert_array_equal(rows.token_ids, [[5] * 6 + [7] * 3 + [2], [6] * 9 + [2]])
    np.testing.assert_array_equal(rows.segment_ids, [[1] * 6 + [2] * 3 + [0], [1] * 9 + [0]])
    np.testing.assert_array_equal(rows.position_ids[0], [0, 1, 2, 3, 4, 5, 0, 1, 2, 0])
    assert rows.target_tokens == 4 + 5 + 2


@pytest.fixture(scope="module")
def model():
    return DeepSeekV3CausalLM(ModelConfig(**SMALL_MODEL))


def _sft_loss(model, rows, labels=None):
    f = rows.features()
    logits = model(f["token_ids"], segment_ids=f["segment_ids"], position_ids=f["position_ids"])
    labels = f["token_ids"] if labels is None else labels
    return logits, shifted_cross_entropy(logits, labels, 1, f["loss_mask"], f["segment_ids"])


def test_loss_and_gradients_come_from_assistant_tokens_only(model, template):
    rows = pack([template.encode_conversation(CONVERSATION)], 128, template.pad_id)
    assert rows.samples == 1
    logits, loss = _sft_loss(model, rows)
    # change the labels of every non-assistant position: the loss does not move
    labels = rows.token_ids.copy()
    labels[rows.loss_mask == 0] = 3
    assert float(shifted_cross_entropy(logits, labels, 1, rows.loss_mask, rows.segment_ids)) == float(loss)
    # gradient w.r.t. the logits: zero wherever the next token is not an assistant token
    logits = tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = shifted_cross_entropy(logits, rows.token_ids, 1, rows.loss_mask, rows.segment_ids)
    grad = np.abs(tape.gradient(value, logits).numpy()).sum(-1)[0]
    target_is_assistant = np.append(rows.loss_mask[0, 1:], 0).astype(bool)
    assert (grad[~target_is_assistant] == 0).all() and (grad[target_is_assistant] > 0).all()


def test_packed_conversations_do_not_see_each_other(model, template):
    first = template.encode_conversation(CONVERSATION[:2])
    second = template.encode_conversation(CONVERSATION[2:])
    packed = pack([first, second], 128, template.pad_id)
    assert packed.token_ids.shape[0] == 1 and packed.samples == 2
    alone = pack([second], 128, template.pad_id)
    logits_packed, loss_packed = _sft_loss(model, packed)
    logits_alone, _ = _sft_loss(model, alone)
    n, start = len(second[0]), len(first[0])
    np.testing.assert_allclose(logits_packed.numpy()[0, start:start + n], logits_alone.numpy()[0, :n], atol=1e-5)
    # the packed loss is the token-weighted mean of the two conversations' losses
    separate = [pack([c], 128, template.pad_id) for c in (first, second)]
    losses = [float(_sft_loss(model, r)[1]) for r in separate]
    counts = [r.target_tokens for r in separate]
    assert float(loss_packed) == pytest.approx(np.average(losses, weights=counts), rel=1e-5)
