"""What goes into a stage's cache key (stages/runtime.py, stages/fingerprint.py): every
config section the stage reads, the project modules it imports (derived from source,
comments and docstrings left out) and its inputs' digests; and the pieces of the runtime
that keep outputs trustworthy: the per-key lock, manifests that detect a changed file,
typed artifacts that say what their content is."""

import os
import shutil

import pytest
import yaml

from stages import artifacts, config, fingerprint, pipeline, runtime
from stages.artifact_types import Documents, Tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INPUTS = {"tokenize": "d1", "tokenizer": "d2"}


def preset(tmp_path, overrides=()):
    path = tmp_path / "preset.yaml"
    path.write_text(yaml.safe_dump({"pipeline": {"name": "t", "artifacts": str(tmp_path / "a")},
                                    "model": {"preset": "tiny"}, "pretrain": {"steps": 10},
                                    "dedup": {"threshold": 0.8}}))
    return config.load(str(path), list(overrides))


def pretrain_key(tmp_path, *overrides, inputs=INPUTS):
    return runtime.cache_key(pipeline.get("pretrain"), preset(tmp_path, overrides), inputs)[0]


def test_a_model_section_change_changes_the_pretrain_key(tmp_path):
    base = pretrain_key(tmp_path)
    assert pretrain_key(tmp_path, "model.overrides.num_hidden_layers=1") != base
    assert pretrain_key(tmp_path, "pretrain.steps=11") != base
    assert pretrain_key(tmp_path, "pretrain.distribution.expert=4") != base   # the JAX trainer's mesh
    assert pretrain_key(tmp_path, inputs={**INPUTS, "tokenize": "other"}) != base
    # a section pretrain does not read, and how Beam runs, leave it alone
    assert pretrain_key(tmp_path, "dedup.threshold=0.7") == base
    assert pretrain_key(tmp_path, "pipeline.beam_args=[--runner, DirectRunner]") == base


def test_the_keras_backend_is_in_model_stages_keys_only(tmp_path, monkeypatch):
    """The same pretrain config trains on tf.distribute or on the JAX mesh depending on
    the backend: their outputs must not stand in for each other. A data stage's does not
    depend on it."""
    import keras

    dedup = pipeline.get("dedup")
    cfg = preset(tmp_path)
    base, dedup_base = pretrain_key(tmp_path), runtime.cache_key(dedup, cfg, {"documents": "d"})[0]
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    assert pretrain_key(tmp_path) != base
    assert runtime.cache_key(dedup, cfg, {"documents": "d"})[0] == dedup_base


def test_a_stage_reading_an_undeclared_section_is_stopped(tmp_path):
    ctx = runtime.StageContext("dedup", None, {}, str(tmp_path), [], "r", "t", sections={})
    with pytest.raises(KeyError, match="without declaring it"):
        ctx.section("model")


@pytest.fixture
def project_copy(tmp_path, monkeypatch):
    """The project's packages copied aside, and the fingerprint pointed at the copy."""
    for package in fingerprint.PROJECT_PACKAGES:
        shutil.copytree(os.path.join(REPO, package), tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(fingerprint, "REPO_ROOT", str(tmp_path))
    return tmp_path


def code(stage: str) -> str:
    return fingerprint.code_digest(*runtime.code_modules(pipeline.get(stage)))[0]


def append(path, text):
    with open(path, "a") as f:
        f.write(text)


def test_an_edit_to_an_imported_module_changes_the_key_and_an_unrelated_one_does_not(project_copy):
    before = {s: code(s) for s in ("evaluate", "grpo", "pretrain", "dedup", "filter")}
    # modules no stage module names in a hand-kept list: found through the import graph
    append(project_copy / "stages" / "evaluation" / "perplexity.py", "\nDEFAULT_STRIDE = 3\n")
    append(project_copy / "stages" / "posttrain" / "sandbox.py", "\nEXTRA_LIMIT = 1\n")
    after = {s: code(s) for s in before}
    assert after["evaluate"] != before["evaluate"]
    assert after["grpo"] != before["grpo"]
    assert after["pretrain"] == before["pretrain"] and after["dedup"] == before["dedup"]

    append(project_copy / "beam_jobs" / "dedup.py", "\nSOME_CONSTANT = 1\n")
    assert code("dedup") != before["dedup"]
    assert code("filter") == before["filter"] and code("pretrain") == before["pretrain"]


def test_comments_and_docstrings_do_not_change_the_key(project_copy):
    before = code("dedup")
    path = project_copy / "beam_jobs" / "dedup.py"
    source = path.read_text()
    path.write_text('"""A reworded module docstring."""\n# a new comment\n' + source.split('"""', 2)[2] + "\n\n# end\n")
    assert code("dedup") == before


def closure(stage: str) -> set[str]:
    return {m for module in runtime.code_modules(pipeline.get(stage)) for m in fingerprint.module_closure(module)}


def test_the_import_closure_follows_function_level_imports():
    # evaluate imports its harnesses inside run(); the model loads through the artifact types
    assert {"stages.evaluation.perplexity", "stages.evaluation.passkey", "model.generate"} <= closure("evaluate")
    assert not [m for m in closure("pretrain") if m.startswith("stages.posttrain")]


def test_a_second_run_with_the_same_key_is_refused(tmp_path):
    with artifacts.KeyLock(str(tmp_path), "filter", "k1"):
        with pytest.raises(artifacts.AlreadyRunning, match="stage 'filter' with cache key k1 is already running"):
            with artifacts.KeyLock(str(tmp_path), "filter", "k1"):
                pass
        with artifacts.KeyLock(str(tmp_path), "filter", "k2"):   # another key runs
            pass
    with artifacts.KeyLock(str(tmp_path), "filter", "k1"):       # released on exit
        pass


def published_output(tmp_path, files: dict[str, bytes], results: dict, artifact: str) -> artifacts.Output:
    directory = tmp_path / "out"
    for relative, content in files.items():
        (directory / os.path.dirname(relative)).mkdir(parents=True, exist_ok=True)
        (directory / relative).write_bytes(content)
    inventory = artifacts.inventory(str(directory))
    artifacts.write_json_atomic(str(directory / artifacts.MANIFEST), {
        "stage": "tokenizer", "cache_key": "k", "digest": "d", "run_id": "r", "results": results,
        "files": inventory, "artifact": artifact})
    return artifacts.Output.load(str(directory))


def test_a_truncated_or_changed_file_of_a_published_output_is_named(tmp_path):
    output = published_output(tmp_path, {"tokenizer.json": b'{"x": 1}', "job-manifest.json": b"{}"},
                              {"tokenizer": "tokenizer.json"}, "tokenizer")
    output.verify()
    path = tmp_path / "out" / "tokenizer.json"
    path.write_bytes(b'{"x"')
    with pytest.raises(artifacts.CorruptOutput, match=r"tokenizer.json: 4 bytes, the manifest recorded 8"):
        output.verify()
    path.write_bytes(b'{"x": 2}')
    output.verify(content=False)     # same size: only the content check sees it
    with pytest.raises(artifacts.CorruptOutput, match="tokenizer.json: content differs"):
        output.verify()
    path.unlink()
    with pytest.raises(artifacts.CorruptOutput, match="tokenizer.json: missing"):
        output.verify()


def test_an_unreadable_tokenizer_is_named(tmp_path):
    output = published_output(tmp_path, {"tokenizer.json": b"not json"}, {"tokenizer": "tokenizer.json"}, "tokenizer")
    with pytest.raises(ValueError, match=r"tokenizer.json: not a readable tokenizer.json"):
        Tokenizer(output).load()


def test_content_digests_leave_out_reports_and_row_order(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": str(i), "text": f"document {i}"} for i in range(6)]
    for name, order, shards, report in (("a", rows, 2, "wall 1.0s"), ("b", rows[::-1], 3, "wall 9.9s")):
        directory = tmp_path / name
        directory.mkdir()
        for shard in range(shards):
            pq.write_table(pa.Table.from_pylist(order[shard::shards]), directory / f"kept-{shard}.parquet")
        (directory / "job-manifest.json").write_text(report)
    digest = {name: Documents.content_digest(str(tmp_path / name), {"documents": "kept-*.parquet"}, {})
              for name in "ab"}
    assert digest["a"] == digest["b"]
    pq.write_table(pa.Table.from_pylist(rows[:5]), tmp_path / "b" / "kept-0.parquet")
    for f in ("kept-1.parquet", "kept-2.parquet"):
        os.remove(tmp_path / "b" / f)
    assert Documents.content_digest(str(tmp_path / "b"), {"documents": "kept-*.parquet"}, {}) != digest["a"]
