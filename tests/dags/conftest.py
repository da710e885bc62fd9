import os
import tempfile

# Airflow reads AIRFLOW_HOME at import: keep its config and logs out of ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="seekforge-airflow-test-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
