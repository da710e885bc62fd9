"""The one way results come back from the sandbox: tagged JSON (worker.py's `plain`),
decoded here strictly into exact builtin types, so no object of the candidate's making
(an __eq__ that is always True, a str subclass) can reach the trusted tests.

Tags: ["none"], ["bool", b], ["int", "<hex>"], ["float", "<float.hex>"] (inf and nan too),
["complex", re, im], ["str", s], ["bytes", "<hex>"], ["list"|"tuple"|"set"|"frozenset",
[items]], ["dict", [[key, value], ...]].
"""

import json
import marshal

MAX_DEPTH = 64
CONTAINERS = {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}


class UnreadableData(ValueError):
    """The sandbox sent something that is not plain data in this encoding."""


def request(name: str, args: tuple, kwargs: dict) -> bytes:
    """A call for the worker. The arguments come from the trusted tests; marshal refuses
    anything but plain data (and code objects, which tests do not pass)."""
    try:
        return marshal.dumps((name, args, kwargs))
    except ValueError as error:
        raise TypeError(f"the tests passed {name}() an argument that is not plain data: {error}") from None


def program(source: str) -> bytes:
    return source.encode("utf-8", "surrogatepass")


def reply(body: bytes) -> list:
    """A worker reply's JSON array; its contents are checked by the caller."""
    try:
        tree = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise UnreadableData(f"not JSON: {error}") from None
    if type(tree) is not list or not tree or type(tree[0]) is not str:
        raise UnreadableData("not a tagged reply")
    return tree


def from_plain(tree, depth: int = 0):
    """The value a ["tag", payload...] tree stands for, in exact builtin types."""
    if depth > MAX_DEPTH:
        raise UnreadableData(f"nested more than {MAX_DEPTH} deep")
    if type(tree) is not list or not tree or type(tree[0]) is not str:
        raise UnreadableData("not a tagged value")
    tag, payload = tree[0], tree[1:]
    try:
        if tag == "none" and not payload:
            return None
        if tag == "bool" and _one(payload, bool):
            return payload[0]
        if tag == "int" and _one(payload, str):
            return int(payload[0], 16)
        if tag == "float" and _one(payload, str):
            return float.fromhex(payload[0])
        if tag == "complex" and len(payload) == 2 and all(type(p) is str for p in payload):
            return complex(float.fromhex(payload[0]), float.fromhex(payload[1]))
        if tag == "str" and _one(payload, str):
            return payload[0]
        if tag == "bytes" and _one(payload, str):
            return bytes.fromhex(payload[0])
        if tag in CONTAINERS and _one(payload, list):
            return CONTAINERS[tag](from_plain(item, depth + 1) for item in payload[0])
        if tag == "dict" and _one(payload, list):
            return dict(_pair(item, depth + 1) for item in payload[0])
    except (ValueError, TypeError, OverflowError) as error:     # bad hex, unhashable key, ...
        raise UnreadableData(f"bad {tag}: {error}") from None
    raise UnreadableData(f"unknown tag or payload: {tag!r}")


def _one(payload: list, kind: type) -> bool:
    return len(payload) == 1 and type(payload[0]) is kind


def _pair(item, depth: int) -> tuple:
    if type(item) is not list or len(item) != 2:
        raise UnreadableData("a dict item is not a [key, value] pair")
    return from_plain(item[0], depth), from_plain(item[1], depth)
