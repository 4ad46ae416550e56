"""The logged model's code (MLflow "models from code"): MLflow copies this file into each model and runs it when
the model is loaded, so no pickled object is stored; the classifier it names rebuilds the model from the
model's artifacts (see ``tracking.models``)."""

import mlflow.models

from deepsweep.tracking.models import DeepsweepClassifier

mlflow.models.set_model(DeepsweepClassifier())
