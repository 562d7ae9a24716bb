"""The registered model, defined as code (MLflow "models from code"): MLflow stores this
file, the `components` package, the ONNX file (with its tokenizer, for a transformer) and
what explains it, and pickles nothing. `kiln predict`, `kiln serve-model` and
`mlflow models serve` all load it.

With `params={"explain": true}` each row also gets `attributions`: the text's words with
their contributions to the label, as JSON. The explainer loads on the first such request,
so serving without it costs nothing."""

import json
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel


class KilnClassifier(PythonModel):
    """A frame with a `text` column in; `label` and one probability
    column per label out, and `attributions` when asked to explain."""

    def load_context(self, context) -> None:
        from components.runtime.loader import load_classifier

        tokenizer = context.artifacts.get("tokenizer")
        self.model = load_classifier(Path(context.artifacts["model"]), Path(tokenizer) if tokenizer else None)
        # Fitted on val when it calibrates the model better; 1 otherwise.
        self.temperature = float((context.model_config or {}).get("temperature", 1.0))
        from components.explain.loading import LazyExplainer

        source = context.artifacts.get("explainer")
        self.explainer = LazyExplainer(Path(source) if source else None, self.model)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from components.errors import KilnError

        try:
            if not isinstance(model_input, pd.DataFrame) or "text" not in model_input.columns:
                raise KilnError(f"expected a frame with a 'text' column, got {type(model_input).__name__}")
            texts = model_input["text"].tolist()
            results = self.model.predict(texts, self.temperature)
            frame = pd.DataFrame([{"label": r["label"], **r["probabilities"]} for r in results])
            if (params or {}).get("explain"):
                frame["attributions"] = self.explain(self.model.check(texts))
        except KilnError as err:
            # A bad request: MLflow's scoring server answers 400 with this message.
            raise MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE) from None
        return frame

    def explain(self, texts: list[str]) -> list[str]:
        return [
            json.dumps([[w.text, round(w.score, 5)] for w in e.words if w.read], ensure_ascii=False)
            for e in self.explanations(texts)
        ]

    def explanations(self, texts: list[str]) -> list:
        """Each text's predicted label and its words' contributions."""
        return self.explainer.explain(texts)


mlflow.models.set_model(KilnClassifier())
