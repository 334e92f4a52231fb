-- Runs once, when the Postgres data volume is first initialised (POSTGRES_DB already created "mlflow").
CREATE DATABASE prefect;
