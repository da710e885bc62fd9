"""Results come back as plain data only: the worker's encoding round-trips every plain
type exactly (ints of any size, inf/nan/-0.0, lone surrogates), turns subclasses into
their plain type, refuses everything else; the host's decoder accepts nothing more."""

import json
import math

import pytest

from stages.sandbox import plain_data
from stages.sandbox.worker import plain

VALUES = [None, True, False, 0, -7, 2 ** 200, -(2 ** 70), 1.5, -0.0, math.inf, -math.inf, 1e-310, 2 + 3j, "",
          "héllo \"quoted\" \n\t\\", "\ud800 lone surrogate", b"", b"\x00\xff", [], [1, [2, [3]]], (), (1,),
          (1, "a", None), {1, 2}, frozenset({"x"}), {}, {1: "a", (1, 2): [3.0], "k": {"nested": (None,)}},
          [True, 1, 1.0]]


def round_trip(value):
    return plain_data.from_plain(json.loads(plain(value)))


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_plain_values_round_trip_exactly(value):
    back = round_trip(value)
    assert repr(back) == repr(value) and type(back) is type(value)


def test_nan_and_bytearray():
    assert math.isnan(round_trip(math.nan))
    assert round_trip(bytearray(b"ab")) == b"ab"


def test_subclasses_come_back_as_the_plain_type_without_their_methods():
    class Liar(str):
        def __eq__(self, other):
            return True
        __hash__ = str.__hash__

    back = round_trip([Liar("x"), True])
    assert type(back[0]) is str and back[0] != "y"


@pytest.mark.parametrize("value", [object(), (i for i in range(2)), len, [print], {"k": object()}, type])
def test_everything_else_is_refused(value):
    with pytest.raises(TypeError):
        plain(value)


def test_depth_is_bounded_both_ways():
    deep = []
    for _ in range(plain_data.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(ValueError):
        plain(deep)
    tree = ["none"]
    for _ in range(plain_data.MAX_DEPTH + 5):
        tree = ["list", [tree]]
    with pytest.raises(plain_data.UnreadableData):
        plain_data.from_plain(tree)
    with pytest.raises(plain_data.UnreadableData):
        plain_data.reply(b"[" * 100_000)


@pytest.mark.parametrize("tree", [
    ["int", 5], ["int", "zz"], ["str", 1], ["bool", 1], ["none", 1], ["bogus"], [], "str", ["list", "abc"],
    ["float", "1.5.5"], ["set", [["list", []]]], ["dict", [[["list", []], ["none"]]]], ["dict", [["none"]]],
    ["list", [5]], ["complex", "0x1p0"],
])
def test_the_decoder_accepts_nothing_else(tree):
    with pytest.raises(plain_data.UnreadableData):
        plain_data.from_plain(tree)


def test_a_reply_must_be_a_tagged_json_array():
    for body in (b"passed", b"{}", b'"ready"', b"[1]", b"\xff"):
        with pytest.raises(plain_data.UnreadableData):
            plain_data.reply(body)
    assert plain_data.reply(b'["ready"]') == ["ready"]


def test_requests_carry_plain_arguments_only():
    assert plain_data.request("f", (1, [2.0], {"a": b"b"}), {"k": None})
    with pytest.raises(TypeError, match="not plain data"):
        plain_data.request("f", (lambda: 1,), {})
