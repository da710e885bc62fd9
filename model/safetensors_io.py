"""Reading and writing safetensors files as numpy arrays, one tensor at a time.

The format: an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
data_offsets}}, then the raw little-endian tensor bytes. Reading seeks to one tensor's
bytes and reads them into a fresh numpy array: one copy, nothing else resident. (safetensors'
own numpy reader memory-maps the file, and every page it touches stays in the process's
RSS until the file is closed, so a shard of several GB would look like several GB more
memory; it also cannot build float8 arrays.) Writing uses safetensors' save_file.

numpy has no bfloat16 or float8 types of its own; ml_dtypes (a dependency of both
TensorFlow and JAX) provides them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import struct

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

# safetensors dtype codes <-> numpy dtypes
NUMPY_DTYPES = {
    "F64": np.dtype("float64"), "F32": np.dtype("float32"), "F16": np.dtype("float16"),
    "BF16": np.dtype(ml_dtypes.bfloat16), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I64": np.dtype("int64"), "I32": np.dtype("int32"),
    "I16": np.dtype("int16"), "I8": np.dtype("int8"), "U8": np.dtype("uint8"), "BOOL": np.dtype("bool"),
}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives and what it is, read from a file header only."""
    name: str
    file: str
    dtype: str               # safetensors code, e.g. "BF16"
    shape: tuple[int, ...]


def read_header(path: str) -> tuple[dict, int]:
    """The JSON header of a safetensors file (tensor entries and __metadata__) and the
    byte offset where the tensor data starts."""
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", raw)
        if length > os.path.getsize(path):
            raise ValueError(f"{path}: not a safetensors file (header length {length} exceeds the file)")
        try:
            return json.loads(f.read(length)), 8 + length
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not a safetensors file (bad header: {e})") from None


def list_tensors(path: str) -> list[TensorInfo]:
    header, _ = read_header(path)
    return [TensorInfo(name, path, entry["dtype"], tuple(entry["shape"]))
            for name, entry in header.items() if name != "__metadata__"]


class TensorReader:
    """One open file; get(name) reads that tensor's bytes into a new numpy array."""

    def __init__(self, path: str):
        self.path = path
        self._header, self._data_start = read_header(path)
        self._file = open(path, "rb")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._file.close()

    def get(self, name: str) -> np.ndarray:
        entry = self._header[name]
        begin, end = entry["data_offsets"]
        dtype = NUMPY_DTYPES[entry["dtype"]]
        if end - begin != math.prod(entry["shape"]) * dtype.itemsize:
            raise ValueError(f"{self.path}: tensor {name!r} has {end - begin} bytes, not the "
                             f"{math.prod(entry['shape'])} x {dtype.itemsize} its shape and dtype need")
        raw = np.empty(end - begin, np.uint8)
        self._file.seek(self._data_start + begin)
        if self._file.readinto(raw) != raw.size:
            raise ValueError(f"{self.path}: tensor {name!r} is cut short (file truncated?)")
        return raw.view(dtype).reshape(entry["shape"])


def write_file(path: str, tensors: dict[str, np.ndarray]) -> None:
    """Write one safetensors file. metadata format "pt": transformers refuses files
    without it."""
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path, metadata={"format": "pt"})
