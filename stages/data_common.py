"""Helpers shared by the data stages: what a stage reports of a Beam job."""

import os


def job_result(manifest: dict, documents: str | None) -> dict:
    """The part of a job manifest a stage reports (counts and reasons), plus its documents glob."""
    keys = ("documents_in", "documents_kept", "documents_removed", "documents_quarantined",
            "removed_by_reason", "quarantined_by_reason", "tokens_out", "stats")
    result = {k: manifest[k] for k in keys if k in manifest}
    if documents:
        result["documents"] = documents
    return result


def merge_counts(results: list[dict]) -> dict:
    """Sum the counts of several job runs (ingest runs one job per source)."""
    total: dict = {}
    for r in results:
        for k, v in r.items():
            if isinstance(v, dict):
                merged = total.setdefault(k, {})
                for kk, vv in v.items():
                    merged[kk] = merged.get(kk, 0) + vv
            elif isinstance(v, (int, float)):
                total[k] = total.get(k, 0) + v
    return total


def subdir(ctx, name: str) -> str:
    path = os.path.join(ctx.output_dir, name)
    os.makedirs(path, exist_ok=True)
    return path
