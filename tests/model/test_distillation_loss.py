"""Logit-level distillation: the two KL directions by hand, temperature, masking."""

import numpy as np
import pytest
from keras import ops

from model.losses import distillation_loss


def _kl(p, q):
    return float(np.sum(p * (np.log(p) - np.log(q))))


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


STUDENT = np.array([[[1.0, 0.0, -1.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]]], np.float32)
TEACHER = np.array([[[0.0, 2.0, 0.0], [1.0, 0.0, 0.0], [9.0, 9.0, 9.0]]], np.float32)
TOKENS = np.array([[0, 1, 2]], np.int32)       # positions 0 and 1 predict tokens 1 and 2


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl"])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_directions_by_hand(divergence, temperature):
    expected = []
    for t in range(2):
        p_teacher, p_student = _softmax(TEACHER[0, t] / temperature), _softmax(STUDENT[0, t] / temperature)
        expected.append(_kl(p_teacher, p_student) if divergence == "forward_kl" else _kl(p_student, p_teacher))
    value = float(ops.convert_to_numpy(distillation_loss(STUDENT, TEACHER, TOKENS, divergence, temperature)))
    assert value == pytest.approx(temperature ** 2 * np.mean(expected), rel=1e-5)


def test_directions_differ_and_masking_counts():
    forward = float(ops.convert_to_numpy(distillation_loss(STUDENT, TEACHER, TOKENS, "forward_kl")))
    reverse = float(ops.convert_to_numpy(distillation_loss(STUDENT, TEACHER, TOKENS, "reverse_kl")))
    assert forward != pytest.approx(reverse)
    # a masked target (loss_mask 0 on token 2) drops position 1 from the mean
    only_first = float(ops.convert_to_numpy(distillation_loss(STUDENT, TEACHER, TOKENS, "forward_kl",
                                                              loss_mask=np.array([[1, 1, 0]]))))
    assert only_first == pytest.approx(_kl(_softmax(TEACHER[0, 0]), _softmax(STUDENT[0, 0])), rel=1e-5)
    same = float(ops.convert_to_numpy(distillation_loss(TEACHER, TEACHER, TOKENS, "reverse_kl")))
    assert same == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="forward_kl, reverse_kl"):
        distillation_loss(STUDENT, TEACHER, TOKENS, "kl")
