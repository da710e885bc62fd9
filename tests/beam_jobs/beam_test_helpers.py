import glob
import os
import sys

import pyarrow.parquet as pq

# One in-process worker: fast start-up for tests that are not about parallelism.
IN_MEMORY = ["--runner", "DirectRunner", "--direct_running_mode", "in_memory", "--direct_num_workers", "1"]
STDLIB = os.path.dirname(os.__file__)


def read_rows(directory, name="kept"):
    rows = []
    for path in sorted(glob.glob(os.path.join(directory, f"{name}-*.parquet"))):
        rows.extend(pq.read_table(path).to_pylist())
    return rows


def load_stdlib_sources():
    """Real code: stdlib modules of a useful size, sorted for stability."""
    paths = sorted(glob.glob(os.path.join(STDLIB, "*.py")))
    out = []
    for p in paths:
        with open(p, encoding="utf-8") as f:
            text = f.read()
        if 3000 < len(text) < 40000:
            out.append((p, text))
    return out
