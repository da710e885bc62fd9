"""Airflow DAGs for seekforge (one per phase) and the code that builds them."""
