"""Typed job parameters: one dataclass per job, validated in one place, built the same
by the stage (in process) and by the job's command line. No pipeline runs here."""

import dataclasses
import types

import pytest

from beam_jobs import dedup, ingest, mix, tokenize, train_tokenizer
from beam_jobs import filter as filter_job
from beam_jobs.params import ParamError
from beam_jobs.quality import CodeRules, TextRules

BAD = [
    (dedup.DedupParams, {"bands": 40}, "bands", "exceeds num_perm"),
    (dedup.DedupParams, {"threshold": 0.0}, "threshold", r"\(0, 1\]"),
    (dedup.DedupParams, {"ngram": 0}, "ngram", ">= 1"),
    (dedup.DedupParams, {"input": ""}, "input", "required"),
    (ingest.IngestParams, {"kind": "binary"}, "kind", "auto, code, text"),
    (ingest.IngestParams, {"max_document_bytes": 0}, "max_document_bytes", ">= 1"),
    (ingest.IngestParams, {"input": ()}, "input", "required"),
    (ingest.IngestParams, {"input": "dir"}, "input", "a list of non-empty strings"),
    (filter_job.FilterParams, {"text": TextRules(min_alpha_word_fraction=2.0)}, "text.min_alpha_word_fraction",
     "<= 1"),
    (filter_job.FilterParams, {"code": CodeRules(max_line_length="long")}, "code.max_line_length", "expected int"),
    (filter_job.FilterParams, {"text": TextRules(min_words=10, max_words=5)}, "text.min_words", "> max_words"),
    (mix.MixParams, {"weights": {"code": -1.0}}, "weights", "non-negative"),
    (mix.MixParams, {"target_documents": 5, "target_tokens": 5}, "target_tokens", "at most one"),
    (mix.MixParams, {"group_by": "colour"}, "group_by", "kind, source"),
    (train_tokenizer.TrainTokenizerParams, {"vocab_size": 100}, "vocab_size", ">= 263"),
    (train_tokenizer.TrainTokenizerParams, {"sample": 0.0}, "sample", r"\(0, 1\]"),
    (tokenize.TokenizeParams, {"seq_len": 1}, "seq_len", ">= 2"),
    (tokenize.TokenizeParams, {"num_shards": 0}, "num_shards", ">= 1"),
    (tokenize.TokenizeParams, {"seq_len": "256"}, "seq_len", "expected an integer"),
]
PATHS = {"input": "in/*.parquet", "output": "out", "tokenizer": "tk/tokenizer.json", "seq_len": 64}


def _required(cls, **values):
    names = {f.name for f in dataclasses.fields(cls)}
    base = {k: v for k, v in PATHS.items() if k in names}
    if cls is ingest.IngestParams:
        base["input"] = ("in",)
    return cls(**{**base, **values})


@pytest.mark.parametrize("cls, values, field, message", BAD, ids=[f"{c.__name__}.{f}" for c, _, f, _ in BAD])
def test_validation_names_the_parameter(cls, values, field, message):
    params = _required(cls, **values)
    with pytest.raises(ParamError, match=message) as e:
        params.validate()
    assert e.value.name == field and str(e.value).startswith(f"{field}: ")


@pytest.mark.parametrize("cls", [dedup.DedupParams, ingest.IngestParams, filter_job.FilterParams, mix.MixParams,
                                 train_tokenizer.TrainTokenizerParams, tokenize.TokenizeParams])
def test_defaults_are_valid_and_params_are_frozen(cls):
    params = _required(cls).validate()
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.output = "elsewhere"


def test_run_validates_before_building_anything(tmp_path):
    with pytest.raises(ParamError, match="bands"):
        dedup.run(dedup.DedupParams(input=str(tmp_path / "none*"), output=str(tmp_path / "o"), bands=40))
    assert not (tmp_path / "o").exists()


def test_the_cli_names_the_flag_of_a_bad_value(capsys):
    with pytest.raises(SystemExit) as e:
        dedup.parse_args(["--input", "x", "--output", "y", "--bands", "40"])
    assert e.value.code == 2
    assert "argument --bands: bands x rows = 40 x 6 = 240 exceeds num_perm 120" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        filter_job.parse_args(["--input", "x", "--output", "y", "--text-rules", '{"min_wrds": 3}'])
    assert "argument --text-rules: unknown TextRules key(s) ['min_wrds']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        mix.parse_args(["--input", "x", "--output", "y", "--weights", "code"])
    assert "argument --weights: item 'code' is not NAME=NUMBER" in capsys.readouterr().err


def test_the_cli_passes_other_arguments_to_beam():
    params, beam_args = dedup.parse_args(["--input", "x", "--output", "y", "--runner", "DataflowRunner",
                                          "--project", "p"])
    assert params == dedup.DedupParams(input="x", output="y")
    assert beam_args == ["--runner", "DataflowRunner", "--project", "p"]


# --- the stage and the command line build the same parameters ------------------------

def _output(stage, uri, results):
    """An upstream output as the stage sees it (duck-typed: the documents/tokenizer
    artifact attributes and the manifest-relative paths)."""
    return types.SimpleNamespace(stage=stage, uri=uri, manifest={"results": results},
                                 path=lambda relative: f"{uri}/{relative}", pattern=f"{uri}/{results['documents']}",
                                 file=f"{uri}/{results['tokenizer']}")


MANIFEST = {"documents_in": 1, "documents_kept": 1, "documents_removed": 0, "documents_quarantined": 0,
            "removed_by_reason": {}, "quarantined_by_reason": {}, "tokens_out": 0, "stats": {}, "vocab_size": 512}


def _captured_by_stage(monkeypatch, job, stage_module, config, inputs, output_dir):
    calls = []
    monkeypatch.setattr(job, "run", lambda params, beam_args=(): calls.append((params, list(beam_args))) or MANIFEST)
    ctx = types.SimpleNamespace(stage=stage_module.__name__, config=config, inputs=inputs, output_dir=output_dir,
                                beam_args=["--runner", "DirectRunner"], log=lambda message: None)
    stage_module.run(ctx)
    return calls


def test_the_cli_builds_the_same_params_as_each_stage(monkeypatch, tmp_path):
    from stages import dedup as dedup_stage
    from stages import filter as filter_stage
    from stages import ingest as ingest_stage
    from stages import mix as mix_stage
    from stages import tokenize as tokenize_stage
    from stages import tokenizer as tokenizer_stage

    out = str(tmp_path / "out")
    upstream = {name: _output(name, f"/a/{name}", {"documents": "kept-*.parquet", "tokenizer": "tokenizer.json"})
                for name in ("ingest", "dedup", "filter", "mix", "tokenizer")}
    docs = lambda name: f"/a/{name}/kept-*.parquet"   # noqa: E731
    cases = [
        (dedup, dedup_stage, dedup_stage.DedupConfig(threshold=0.7, num_perm=128, bands=16, rows=8, ngram=3,
                                                     cc_rounds=9),
         ["--input", docs("ingest"), "--output", out, "--threshold", "0.7", "--num-perm", "128", "--bands", "16",
          "--rows", "8", "--ngram", "3", "--cc-rounds", "9"]),
        (filter_job, filter_stage, filter_stage.FilterConfig(text=TextRules(min_words=20, reject_curly_brace=True),
                                                             code=CodeRules(max_bytes=5000)),
         ["--input", docs("dedup"), "--output", out, "--text-rules", '{"min_words": 20, "reject_curly_brace": true}',
          "--code-rules", '{"max_bytes": 5000}']),
        (mix, mix_stage, mix_stage.MixConfig(weights={"code": 0.6, "text": 0.4}, group_by="source",
                                             target_tokens=1000, bytes_per_token=3.5, seed=7),
         ["--input", docs("filter"), "--output", out, "--weights", "code=0.6,text=0.4", "--group-by", "source",
          "--target-tokens", "1000", "--bytes-per-token", "3.5", "--seed", "7"]),
        (train_tokenizer, tokenizer_stage, tokenizer_stage.TokenizerConfig(vocab_size=1024, min_frequency=3,
                                                                           sample=0.5, max_documents=99),
         ["--input", docs("mix"), "--output", out, "--vocab-size", "1024", "--min-frequency", "3", "--sample", "0.5",
          "--max-documents", "99"]),
        (tokenize, tokenize_stage, tokenize_stage.TokenizeConfig(seq_len=128, num_shards=3, batch_size=16),
         ["--input", docs("mix"), "--tokenizer", "/a/tokenizer/tokenizer.json", "--seq-len", "128", "--output", out,
          "--num-shards", "3", "--batch-size", "16"]),
    ]
    for job, stage_module, config, argv in cases:
        calls = _captured_by_stage(monkeypatch, job, stage_module, config, upstream, out)
        assert len(calls) == 1, stage_module.__name__
        beam = [] if job is train_tokenizer else ["--runner", "DirectRunner"]   # it trains in process
        cli_params, beam_args = job.parse_args(argv + beam)
        assert calls[0][0] == cli_params, stage_module.__name__
        assert calls[0][1] == beam_args == beam

    # ingest: one job per source, every matched file an --input
    (tmp_path / "src").mkdir()
    for name in ("b.py", "a.py"):
        (tmp_path / "src" / name).write_text("x = 1\n")
    source = ingest_stage.SourceConfig(name="code", paths=[str(tmp_path / "src" / "*.py")], kind="code",
                                       format="text", text_field="body", max_document_bytes=4096)
    calls = _captured_by_stage(monkeypatch, ingest, ingest_stage, ingest_stage.IngestConfig(sources=[source]), {},
                               out)
    files = sorted(str(tmp_path / "src" / n) for n in ("a.py", "b.py"))
    cli_params, _ = ingest.parse_args([a for f in files for a in ("--input", f)] + [
        "--output", f"{out}/sources/code", "--source", "code", "--kind", "code", "--format", "text",
        "--text-field", "body", "--max-document-bytes", "4096"])
    assert [c[0] for c in calls] == [cli_params]


def test_stage_configs_report_the_jobs_checks_under_their_keys():
    from stages.config import ConfigError
    from stages.dedup import DedupConfig
    from stages.filter import FilterConfig
    from stages.ingest import SourceConfig
    from stages.mix import MixConfig
    from stages.tokenize import TokenizeConfig
    from stages.tokenizer import TokenizerConfig
    cases = [(DedupConfig(bands=40), "dedup", "dedup.bands: bands x rows"),
             (FilterConfig(text=TextRules(max_duplicate_line_fraction=1.5)), "filter",
              "filter.text.max_duplicate_line_fraction: a fraction"),
             (MixConfig(weights={"code": 0.0}), "mix", "mix.weights: non-negative"),
             (TokenizeConfig(seq_len=1), "tokenize", "tokenize.seq_len: must be >= 2"),
             (TokenizerConfig(sample=1.5), "tokenizer", r"tokenizer.sample: must be in \(0, 1\]"),
             (SourceConfig(name="s", paths=["x"], max_document_bytes=0), "ingest.sources[0]",
              r"ingest.sources\[0\].max_document_bytes: must be >= 1"),
             (SourceConfig(name="s", paths=["x"], format="xml"), "ingest.sources[0]",
              r"ingest.sources\[0\].format: expected one of auto, text, jsonl, parquet")]
    for config, key, message in cases:
        with pytest.raises(ConfigError, match=message):
            config.validate(key)
    for config_cls in (DedupConfig, FilterConfig, MixConfig, TokenizeConfig, TokenizerConfig):
        config_cls().validate(config_cls.__name__)   # the defaults are valid
    SourceConfig(name="s", paths=["x"]).validate("ingest.sources[0]")


def test_stage_config_defaults_are_the_jobs_defaults():
    from stages.dedup import DedupConfig
    from stages.ingest import SourceConfig
    from stages.mix import MixConfig
    from stages.tokenize import TokenizeConfig
    from stages.tokenizer import TokenizerConfig
    pairs = [(DedupConfig, dedup.DedupParams), (SourceConfig, ingest.IngestParams), (MixConfig, mix.MixParams),
             (TokenizeConfig, tokenize.TokenizeParams), (TokenizerConfig, train_tokenizer.TrainTokenizerParams)]
    for config_cls, params_cls in pairs:
        params = {f.name: f for f in dataclasses.fields(params_cls)}
        for f in dataclasses.fields(config_cls):
            if f.name in params and params[f.name].default is not dataclasses.MISSING:
                assert f.default == params[f.name].default, f"{config_cls.__name__}.{f.name}"
            elif f.name in params and params[f.name].default_factory is not dataclasses.MISSING:
                assert f.default_factory() == params[f.name].default_factory(), f"{config_cls.__name__}.{f.name}"
