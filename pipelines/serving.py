"""The registered model, defined as code (MLflow "models from code"): MLflow stores this
file, the `components` package and the ONNX file with its tokenizer, and pickles nothing.
`kiln predict` and `mlflow models serve` both load it."""

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel


class KilnClassifier(PythonModel):
    """A frame with a `text` column (or a list of texts) in; `label` and one probability
    column per label out."""

    def load_context(self, context) -> None:
        from components.deploy.runtime import load_classifier

        tokenizer = context.artifacts.get("tokenizer")
        self.model = load_classifier(Path(context.artifacts["model"]), Path(tokenizer) if tokenizer else None)

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        from components.errors import KilnError

        try:
            if isinstance(model_input, pd.DataFrame):
                if "text" not in model_input.columns:
                    raise KilnError(f"expected a 'text' column, got {list(model_input.columns)}")
                texts = model_input["text"].tolist()
            else:
                texts = model_input
            results = self.model.predict(texts)
        except KilnError as err:
            # A bad request: MLflow's scoring server answers 400 with this message.
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
        return pd.DataFrame([{"label": r["label"], **r["probabilities"]} for r in results])


mlflow.models.set_model(KilnClassifier())
