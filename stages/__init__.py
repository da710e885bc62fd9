"""Pipeline stages and the runtime that binds config, artifacts and MLflow (DESIGN.md)."""
