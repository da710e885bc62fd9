"""Typed stage outputs. Each type says which result keys a stage must return for it,
what its content is (the digest downstream cache keys use) and how to load it; every
loader names the file when the file is unreadable.

| type           | published by                         | content (what the digest covers)           |
|----------------|--------------------------------------|--------------------------------------------|
| documents      | ingest, dedup, filter, mix           | the rows of the kept documents, any order  |
| tokenizer      | tokenizer                            | tokenizer.json                             |
| shards         | tokenize                             | the TFRecord shards and their row length   |
| model          | pretrain, extend_*, sft, grpo, distill | config.json, weights, final checkpoint   |
| report         | evaluate, posttrain_evaluate         | report.json                                |
| posttrain_data | posttrain_data                       | the JSONL files                            |

Job manifests, metrics.jsonl, plots and the like are published and verified too, but are
not content: they hold paths, times and speeds that differ between identical runs. So an
upstream rerun whose content is unchanged leaves downstream cache keys unchanged."""

import fnmatch
import glob
import hashlib
import json
import os

from stages.artifacts import Output, files_digest


class Artifact:
    type = ""
    required: tuple[str, ...] = ()      # result keys a stage publishing this type returns

    def __init__(self, output: Output):
        self.output = output

    # what downstream code needs of any output
    @property
    def uri(self) -> str:
        return self.output.uri

    @property
    def run_id(self) -> str:
        return self.output.run_id

    @property
    def digest(self) -> str:
        return self.output.digest

    @property
    def results(self) -> dict:
        return self.output.results

    def path(self, relative: str) -> str:
        return self.output.path(relative)

    def result_path(self, key: str) -> str:
        relative = self.results.get(key)
        if not relative:
            raise ValueError(f"the {self.type} output of stage {self.output.stage!r} at {self.uri} "
                             f"publishes no {key!r}")
        return self.path(relative)

    @classmethod
    def check_results(cls, stage: str, results: dict) -> None:
        missing = [k for k in cls.required if k not in results]
        if missing:
            raise ValueError(f"stage {stage!r} publishes a {cls.type} but returned no {missing[0]!r} result")

    @classmethod
    def content_digest(cls, directory: str, results: dict, files: dict[str, dict]) -> str:
        """The identity of the content (default: every file)."""
        return files_digest(files)


class Documents(Artifact):
    type, required = "documents", ("documents",)

    @property
    def pattern(self) -> str:
        """The glob of the kept documents' Parquet files (what the next Beam job reads)."""
        return self.result_path("documents")

    @classmethod
    def content_digest(cls, directory, results, files):
        """An order-free digest of the kept rows: the sum of the rows' hashes, so the same
        documents written in another order or another sharding have the same digest (a
        Beam PCollection has no order)."""
        import pyarrow.parquet as pq

        total, rows = 0, 0
        for path in sorted(glob.glob(os.path.join(directory, results["documents"]))):
            try:
                table = pq.read_table(path)
            except Exception as e:  # noqa: BLE001 (pyarrow raises several types)
                raise ValueError(f"{path}: not a readable Parquet file ({e})") from None
            columns = [table.column(name).to_pylist() for name in table.column_names]
            for row in zip(*columns):
                h = hashlib.sha256("\0".join(map(str, row)).encode("utf-8", "surrogatepass")).digest()
                total = (total + int.from_bytes(h, "big")) % (1 << 256)
                rows += 1
        return hashlib.sha256(f"documents\0{rows}\0{total:064x}".encode()).hexdigest()


class Tokenizer(Artifact):
    type, required = "tokenizer", ("tokenizer",)

    @property
    def file(self) -> str:
        return self.result_path("tokenizer")

    def load(self):
        """The tokenizers.Tokenizer."""
        from tokenizers import Tokenizer as HFTokenizer

        try:
            return HFTokenizer.from_file(self.file)
        except Exception as e:  # noqa: BLE001 (the Rust side raises plain Exception)
            raise ValueError(f"{self.file}: not a readable tokenizer.json ({e})") from None

    @classmethod
    def content_digest(cls, directory, results, files):
        return files_digest(files, lambda relative: relative == results["tokenizer"])


class Shards(Artifact):
    type, required = "shards", ("index",)

    @property
    def directory(self) -> str:
        return self.uri

    @classmethod
    def content_digest(cls, directory, results, files):
        with open(os.path.join(directory, results["index"])) as f:
            seq_len = json.load(f)["seq_len"]
        return hashlib.sha256(f"shards\0{seq_len}\0{files_digest(files, lambda r: r.endswith('.tfrecord'))}"
                              .encode()).hexdigest()


class Model(Artifact):
    """A trained model: model/config.json + model/model.weights.h5 (what later stages and
    MLflow load), checkpoint/final (every variable, what a downstream training stage
    starts from) and the registered MLflow model."""
    type, required = "model", ("model", "checkpoint", "mlflow_model")
    CONTENT = ("model/*", "checkpoint/*")

    @property
    def model_dir(self) -> str:
        return self.result_path("model")

    @property
    def checkpoint(self) -> str:
        return self.result_path("checkpoint")

    @property
    def mlflow_model(self) -> str:
        return self.results["mlflow_model"]

    def config(self):
        from model.config import ModelConfig

        return ModelConfig.from_hf(self.model_dir)

    def load(self, dtype: str | None = None):
        """The DeepSeekV3CausalLM with the published weights."""
        return load_model_dir(self.model_dir, dtype)

    @classmethod
    def content_digest(cls, directory, results, files):
        return files_digest(files, lambda r: any(fnmatch.fnmatch(r, p) for p in cls.CONTENT))


class Report(Artifact):
    type, required = "report", ("report",)

    def load(self) -> dict:
        path = self.result_path("report")
        try:
            with open(path) as f:
                return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not JSON ({e})") from None

    @classmethod
    def content_digest(cls, directory, results, files):
        return files_digest(files, lambda relative: relative == results["report"])


class PosttrainData(Artifact):
    type = "posttrain_data"
    required = ("sft_train", "sft_held_out", "prompts_train", "prompts_held_out")

    def records(self, name: str) -> list[dict]:
        """One of the JSONL files by its result key (sft_train, prompts_held_out, ...)."""
        path = self.result_path(name)
        records = []
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{number}: not a JSON object ({e.msg})") from None
        return records

    @classmethod
    def content_digest(cls, directory, results, files):
        return files_digest(files, lambda relative: relative.endswith(".jsonl"))


def load_model_dir(model_dir: str, dtype: str | None = None):
    """An exported model directory (config.json + model.weights.h5) as DeepSeekV3CausalLM:
    the one loader behind the model artifact, the MLflow pyfunc and `seekforge convert`."""
    from model.config import ModelConfig
    from model.transformer import DeepSeekV3CausalLM

    model = DeepSeekV3CausalLM(ModelConfig.from_hf(model_dir), dtype=dtype)
    weights = os.path.join(model_dir, WEIGHTS_FILE)
    try:
        model.load_weights(weights)
    except Exception as e:  # noqa: BLE001 (h5py and Keras raise many types)
        raise ValueError(f"{weights}: cannot load the model's weights ({type(e).__name__}: {e})") from None
    return model


WEIGHTS_FILE = "model.weights.h5"
TYPES = {cls.type: cls for cls in (Documents, Tokenizer, Shards, Model, Report, PosttrainData)}


def typed(output: Output, expected: str | None = None) -> Artifact:
    """The output as its artifact type (from its manifest, or `expected` for outputs
    written before manifests named their type)."""
    name = output.manifest.get("artifact") or expected
    if expected and name != expected:
        raise ValueError(f"{output.uri}: a {name} output, where a {expected} is expected")
    if name not in TYPES:
        raise ValueError(f"{output.uri}: unknown artifact type {name!r}")
    return TYPES[name](output)
