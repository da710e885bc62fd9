"""filter: Gopher/C4-style heuristics for text, line-length/alphanumeric/auto-generated
checks for code. Every rule is configurable; every removal is counted by rule and written
to DIR/removed-*.parquet with its reason and the measured value.

    python -m beam_jobs.filter --input 'DIR/kept-*.parquet' --output DIR \\
        [--text-rules '{"min_words": 20}'] [--code-rules '{"max_line_length": 400}']"""

import argparse
import dataclasses
import json
import logging
import sys
import typing

import apache_beam as beam

from beam_jobs import accounting, options, parquet_io
from beam_jobs.documents import REMOVED_SCHEMA, removed
from beam_jobs.quality import CodeRules, TextRules, check_code, check_text, rules_from_dict


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


def build(pipeline, input_glob, output, text_rules=TextRules(), code_rules=CodeRules()):
    judged = (parquet_io.read(pipeline, input_glob)
              | "Count in" >> beam.ParDo(accounting.CountAs("in"))
              | "Apply rules" >> beam.ParDo(ApplyRules(text_rules, code_rules))
              .with_output_types(typing.Any).with_outputs("removed", main="kept"))
    parquet_io.write(judged.kept | "Count kept" >> beam.ParDo(accounting.CountAs("kept")), output, "kept")
    parquet_io.write(judged.removed | "Count removed" >> beam.ParDo(accounting.CountByReason("removed")),
                     output, "removed", REMOVED_SCHEMA)


def _json_object(value: str) -> dict:
    try:
        obj = json.loads(value)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError("must be a JSON object")
    return obj


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m beam_jobs.filter", description=__doc__.splitlines()[0])
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--text-rules", type=_json_object, default={},
                   help=f"JSON overrides of {[f.name for f in dataclasses.fields(TextRules)]}")
    p.add_argument("--code-rules", type=_json_object, default={},
                   help=f"JSON overrides of {[f.name for f in dataclasses.fields(CodeRules)]}")
    return p


def run(argv=None) -> dict:
    args, beam_options = options.parse(parser(), argv)
    text_rules = rules_from_dict(TextRules, args.text_rules)
    code_rules = rules_from_dict(CodeRules, args.code_rules)
    pipeline = beam.Pipeline(options=beam_options)
    build(pipeline, args.input, args.output, text_rules, code_rules)
    params = {"input": args.input, "output": args.output, "text_rules": dataclasses.asdict(text_rules),
              "code_rules": dataclasses.asdict(code_rules)}
    return accounting.run_and_account(pipeline, args.output, "filter", params)


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    manifest = run(sys.argv[1:])
    print({k: manifest[k] for k in ("documents_in", "documents_kept", "removed_by_reason")})
