"""A strict check of a Kubernetes object (as the API server receives it, camelCase
JSON) against the kubernetes client's models: every key must be a field of the model
(unknown keys are typos the API server would drop), and values must have the model's types."""

import re

from kubernetes.client import models

PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "object": object, "datetime": str}


def validate(data, type_name: str, path: str = "$") -> None:
    if type_name in PRIMITIVES:
        assert isinstance(data, PRIMITIVES[type_name]), f"{path}: expected {type_name}, got {data!r}"
        return
    if match := re.fullmatch(r"list\[(.+)\]", type_name):
        assert isinstance(data, list), f"{path}: expected a list, got {data!r}"
        for i, item in enumerate(data):
            validate(item, match.group(1), f"{path}[{i}]")
        return
    if match := re.fullmatch(r"dict\[(\w+), (.+)\]", type_name):
        assert isinstance(data, dict), f"{path}: expected a mapping, got {data!r}"
        for key, value in data.items():
            validate(value, match.group(2), f"{path}.{key}")
        return
    cls = getattr(models, type_name)
    assert isinstance(data, dict), f"{path}: expected a {type_name} mapping, got {data!r}"
    by_json_name = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    for key, value in data.items():
        assert key in by_json_name, f"{path}.{key}: not a field of {type_name}"
        if value is not None:
            validate(value, cls.openapi_types[by_json_name[key]], f"{path}.{key}")
