-- The other databases on the compose file's Postgres: MLflow's tracking store and the
-- user store of its basic-auth app. (Run once, when the postgres volume is new; on an
-- older volume create mlflow_auth by hand: `docker compose -f docker/compose.yaml exec
-- postgres createdb -U seekforge -O seekforge mlflow_auth`.)
CREATE DATABASE mlflow OWNER seekforge;
CREATE DATABASE mlflow_auth OWNER seekforge;
