"""tokenize: documents -> token ids + EOS -> fixed-length packed rows with segment ids
(schema in packing.py) -> TFRecord shards tf.data streams (shards.py), plus an index.

    python -m beam_jobs.tokenize --input 'DIR/kept-*.parquet' --tokenizer tokenizer.json \\
        --seq-len 256 --output DIR [--num-shards 8] [--batch-size 256]

Documents go to shard hash(id) mod num_shards; within a shard they are packed in id order,
so a shard's content does not depend on the runner or the number of workers. Writes
DIR/shard-SSSSS-of-NNNNN.tfrecord, DIR/index.json (per shard: rows = records, bytes,
documents, tokens; shards.verify_shards checks the files against it) and
DIR/job-manifest.json.

In process: `tokenize.run(tokenize.TokenizeParams(input=GLOB, tokenizer=PATH, seq_len=256, output=DIR),
beam_args)`."""

import dataclasses
import hashlib
import json
import logging
import os
import sys

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_jobs import accounting, options, parquet_io
from beam_jobs.packing import Packer
from beam_jobs.params import JobParams, param, parse_args as _parse_args
from beam_jobs.shards import INDEX, frame, record_bytes

EOS_TOKEN = "<｜end▁of▁sentence｜>"
PAD_TOKEN = "<｜▁pad▁｜>"


@dataclasses.dataclass(frozen=True)
class TokenizeParams(JobParams):
    input: str = param(help="glob of document Parquet files")
    tokenizer: str = param(help="path of tokenizer.json")
    seq_len: int = param(minimum=2, help="tokens per packed row")
    output: str = param(help="output directory")
    num_shards: int = param(8, minimum=1, help="TFRecord shards")
    batch_size: int = param(256, minimum=1, help="documents per encode_batch call")


def shard_of(doc_id: str, num_shards: int) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "big") % num_shards


def shard_name(shard: int, num_shards: int) -> str:
    return f"shard-{shard:05d}-of-{num_shards:05d}.tfrecord"


class WriteShard(beam.DoFn):
    """(shard, docs) -> one TFRecord file, written under a temporary name and renamed."""

    def __init__(self, tokenizer_path, seq_len, output, num_shards, batch_size):
        self.tokenizer_path, self.seq_len, self.output = tokenizer_path, seq_len, output
        self.num_shards, self.batch_size = num_shards, batch_size

    def setup(self):
        from tokenizers import Tokenizer
        with FileSystems.open(self.tokenizer_path, compression_type="uncompressed") as f:
            self.tokenizer = Tokenizer.from_str(f.read().decode("utf-8"))
        self.eos_id = self.tokenizer.token_to_id(EOS_TOKEN)
        self.pad_id = self.tokenizer.token_to_id(PAD_TOKEN)
        if self.eos_id is None or self.pad_id is None:
            raise ValueError(f"{self.tokenizer_path} lacks {EOS_TOKEN} or {PAD_TOKEN}")

    def process(self, keyed):
        shard, docs = keyed
        docs = sorted(docs, key=lambda d: d["id"])
        name = shard_name(shard, self.num_shards)
        final = os.path.join(self.output, name)
        temporary = os.path.join(self.output, f".tmp-{name}")
        packer = Packer(self.seq_len, self.eos_id, self.pad_id)
        rows = tokens = size = 0
        with FileSystems.create(temporary, compression_type="uncompressed") as writer:
            def write(row):
                nonlocal rows, size
                framed = frame(record_bytes(*row))
                writer.write(framed)
                rows, size = rows + 1, size + len(framed)
            for start in range(0, len(docs), self.batch_size):
                batch = docs[start:start + self.batch_size]
                for encoding in self.tokenizer.encode_batch([d["text"] for d in batch], add_special_tokens=False):
                    tokens += len(encoding.ids) + 1
                    for row in packer.add(encoding.ids):
                        write(row)
            for row in packer.flush():
                write(row)
        if FileSystems.exists(final):
            FileSystems.delete([final])
        FileSystems.rename([temporary], [final])
        accounting.counter("kept").inc(len(docs))
        accounting.counter("tokens_out").inc(tokens)
        accounting.counter("rows_out").inc(rows)
        accounting.counter("pad_tokens").inc(packer.pad_tokens)
        yield {"path": name, "shard": shard, "documents": len(docs), "tokens": tokens, "rows": rows,
               "bytes": size, "pad_tokens": packer.pad_tokens}


def _write_index(shards, output, seq_len, tokenizer_path, num_shards):
    shards = sorted(shards, key=lambda s: s["shard"])
    present = {s["shard"] for s in shards}
    # Shards that received no document exist too, empty, so the glob count is stable.
    for shard in range(num_shards):
        if shard not in present:
            name = shard_name(shard, num_shards)
            FileSystems.create(os.path.join(output, name), compression_type="uncompressed").close()
            shards.append({"path": name, "shard": shard, "documents": 0, "tokens": 0, "rows": 0, "bytes": 0,
                           "pad_tokens": 0})
    shards.sort(key=lambda s: s["shard"])
    index = {"format": "tfrecord of raw little-endian int32: token_ids[seq_len] then segment_ids[seq_len]",
             "seq_len": seq_len, "tokenizer": tokenizer_path, "shards": shards,
             "rows": sum(s["rows"] for s in shards), "documents": sum(s["documents"] for s in shards),
             "tokens": sum(s["tokens"] for s in shards)}
    with FileSystems.create(os.path.join(output, INDEX)) as f:
        f.write(json.dumps(index, indent=2).encode("utf-8"))


def build(pipeline, params: TokenizeParams):
    input_glob, tokenizer_path, seq_len, output = params.input, params.tokenizer, params.seq_len, params.output
    num_shards, batch_size = params.num_shards, params.batch_size
    FileSystems.mkdirs(output) if not FileSystems.exists(output) else None
    shards = (parquet_io.read(pipeline, input_glob)
              | "Count in" >> beam.ParDo(accounting.CountAs("in"))
              | "Key by shard" >> beam.Map(lambda d: (shard_of(d["id"], num_shards), d))
              | "Group by shard" >> beam.GroupByKey()
              | "Tokenize, pack, write" >> beam.ParDo(WriteShard(tokenizer_path, seq_len, output, num_shards, batch_size)))
    (shards
     | "All shards" >> beam.combiners.ToList()
     | "Write index" >> beam.Map(_write_index, output, seq_len, tokenizer_path, num_shards))


def run(params: TokenizeParams, beam_args=()) -> dict:
    """Run the job; returns its manifest (also written to OUTPUT/job-manifest.json)."""
    params.validate()
    if not FileSystems.exists(params.tokenizer):
        raise FileNotFoundError(f"tokenizer {params.tokenizer!r} does not exist")
    pipeline = beam.Pipeline(options=options.pipeline_options(beam_args))
    build(pipeline, params)
    return accounting.run_and_account(pipeline, params.output, "tokenize", dataclasses.asdict(params))


def parse_args(argv=None) -> tuple[TokenizeParams, list[str]]:
    return _parse_args(TokenizeParams, argv, "python -m beam_jobs.tokenize", __doc__)


def main(argv=None) -> int:
    params, beam_args = parse_args(argv)
    manifest = run(params, beam_args)
    print({k: manifest[k] for k in ("documents_in", "documents_kept", "tokens_out", "stats")})
    return 0


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.WARNING)
    sys.exit(main(sys.argv[1:]))
