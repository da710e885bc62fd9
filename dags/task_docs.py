"""The doc shown on each task in the Airflow UI: what the stage does (its module's
docstring, read from source so parsing a DAG imports no TensorFlow), what it reads and
publishes, the command it runs, and how to rerun it."""

import ast
import os

from stages import pipeline

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def module_summary(reference: str) -> str:
    """The first paragraph of the docstring of the module in "package.module:attr"."""
    path = os.path.join(REPO_ROOT, *reference.partition(":")[0].split(".")) + ".py"
    with open(path) as f:
        docstring = ast.get_docstring(ast.parse(f.read())) or ""
    return " ".join(docstring.split("\n\n")[0].split())


def stage_doc(name: str) -> str:
    spec = pipeline.get(name)
    inputs = ", ".join(f"`{i}`" for i in spec.inputs) or "its external sources only"
    return (f"{module_summary(spec.run)}\n\n"
            f"- reads: {inputs}; publishes a `{spec.output}` artifact (MLflow run tagged `seekforge.stage={name}`)\n"
            f"- runs: `seekforge run {name} --config configs/<preset>.yaml --set ... --pipeline-run ...`; "
            "the log shows its output as it runs\n"
            "- rerun: *Clear* this task with **Downstream off** to rerun only this stage (forced, so a cached "
            "output is rebuilt); with Downstream on, the stages after it rerun too")
