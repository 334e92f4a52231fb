"""The code MLflow logs as the talkalign pyfunc model (models-from-code: no pickled Python object)."""

from mlflow.models import set_model

from components.registry.pyfunc import TalkalignModel

set_model(TalkalignModel())
