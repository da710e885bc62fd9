-- The second database on the compose file's Postgres: MLflow's tracking store.
CREATE DATABASE mlflow OWNER seekforge;
