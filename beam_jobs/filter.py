"""filter: Gopher/C4-style heuristics for text, line-length/alphanumeric/auto-generated
checks for code. Every rule is configurable; every removal is counted by rule and written
to DIR/removed-*.parquet with its reason and the measured value.

    python -m beam_jobs.filter --input 'DIR/kept-*.parquet' --output DIR \\
        [--text-rules '{"min_words": 20}'] [--code-rules '{"max_line_length": 400}']

In process: `filter.run(filter.FilterParams(input=GLOB, output=DIR, text=TextRules(min_words=20)), beam_args)`."""

import dataclasses
import json
import logging
import sys
import typing

import apache_beam as beam

from beam_jobs import accounting, options, parquet_io
from beam_jobs.documents import REMOVED_SCHEMA, removed
from beam_jobs.params import JobParams, ParamError, param, parse_args as _parse_args
from beam_jobs.quality import CodeRules, TextRules, check_code, check_text, rule_problems, rules_from_dict


def _rules_parser(cls):
    """--text-rules / --code-rules: a JSON object of overrides of the defaults."""
    def parse(value: str):
        try:
            obj = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"not JSON: {e}") from None
        if not isinstance(obj, dict):
            raise ValueError("must be a JSON object")
        return rules_from_dict(cls, obj)
    parse.__name__ = f"{cls.__name__} JSON"
    return parse


@dataclasses.dataclass(frozen=True)
class FilterParams(JobParams):
    input: str = param(help="glob of document Parquet files")
    output: str = param(help="output directory")
    text: TextRules = param(factory=TextRules, flag="--text-rules", parse=_rules_parser(TextRules), show="{}",
                            help=f"JSON overrides of the text rules {[f.name for f in dataclasses.fields(TextRules)]}")
    code: CodeRules = param(factory=CodeRules, flag="--code-rules", parse=_rules_parser(CodeRules), show="{}",
                            help=f"JSON overrides of the code rules {[f.name for f in dataclasses.fields(CodeRules)]}")

    def check(self):
        for name, rules, cls in (("text", self.text, TextRules), ("code", self.code, CodeRules)):
            if not isinstance(rules, cls):
                raise ParamError(name, f"expected {cls.__name__}, got {type(rules).__name__}")
            for field, message in rule_problems(rules):
                raise ParamError(f"{name}.{field}", message)


class ApplyRules(beam.DoFn):
    def __init__(self, text_rules: TextRules, code_rules: CodeRules):
        self.text_rules, self.code_rules = text_rules, code_rules

    def process(self, doc):
        if doc["kind"] == "code":
            verdict = check_code(doc["text"], self.code_rules)
        else:
            verdict = check_text(doc["text"], self.text_rules)
        if verdict is None:
            yield doc
        else:
            rule, detail = verdict
            yield beam.pvalue.TaggedOutput("removed", removed(doc, rule, detail))


def build(pipeline, params: FilterParams):
    output = params.output
    judged = (parquet_io.read(pipeline, params.input)
              | "Count in" >> beam.ParDo(accounting.CountAs("in"))
              | "Apply rules" >> beam.ParDo(ApplyRules(params.text, params.code))
              .with_output_types(typing.Any).with_outputs("removed", main="kept"))
    parquet_io.write(judged.kept | "Count kept" >> beam.ParDo(accounting.CountAs("kept")), output, "kept")
    parquet_io.write(judged.removed | "Count removed" >> beam.ParDo(accounting.CountByReason("removed")),
                     output, "removed", REMOVED_SCHEMA)


def run(params: FilterParams, beam_args=()) -> dict:
    """Run the job; returns its manifest (also written to OUTPUT/job-manifest.json)."""
    params.validate()
    pipeline = beam.Pipeline(options=options.pipeline_options(beam_args))
    build(pipeline, params)
    return accounting.run_and_account(pipeline, params.output, "filter", dataclasses.asdict(params))


def parse_args(argv=None) -> tuple[FilterParams, list[str]]:
    return _parse_args(FilterParams, argv, "python -m beam_jobs.filter", __doc__)


def main(argv=None) -> int:
    params, beam_args = parse_args(argv)
    manifest = run(params, beam_args)
    print({k: manifest[k] for k in ("documents_in", "documents_kept", "removed_by_reason")})
    return 0


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(main(sys.argv[1:]))
