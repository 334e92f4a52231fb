"""The MLflow model registry: the pyfunc model, promotion gates, idempotent registration, promote/rollback."""
