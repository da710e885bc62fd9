"""Airflow DAG `seekforge_posttrain`: see dags/phases.py for its stages and dags/dag_factory.py
for how it is built."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo: dags, stages

from dags.dag_factory import build_phase_dag  # noqa: E402

dag = build_phase_dag("seekforge_posttrain")
