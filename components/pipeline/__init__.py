"""What the `pipeline` flow (flows/pipeline.py) runs, apart from Prefect: the run's parameters and the DVC command
they make (parameters.py), the DVC subprocess (dvc_process.py), the services checked first (services.py) and
the run's summary as tables and markdown (summary.py)."""
