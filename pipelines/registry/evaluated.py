"""What a registered model's page in MLflow shows beside its files: the splits it was
measured on, as MLflow datasets whose digest is DVC's md5 of each file, and its figures on
the test split, logged on the model itself."""

from dataclasses import dataclass

import pandas as pd


@dataclass(frozen=True)
class Evaluated:
    """The splits a model was measured on, as MLflow datasets whose digest is DVC's md5 of
    the file, and its figures on the test split."""

    splits: dict[str, tuple[pd.DataFrame, str, str]]  # split -> (rows, path, md5)
    test_metrics: dict[str, float]
    # The pipeline's run, whose row in the experiment's table then names its data too.
    parent_run_id: str | None = None

    def log(self, model_id: str) -> None:
        """On the active run, linked to logged model `model_id`, and on the parent run."""
        import mlflow
        from mlflow.entities import Dataset, DatasetInput, InputTag, LoggedModelInput

        found = {}
        for split, (rows, path, md5) in self.splits.items():
            found[split] = mlflow.data.from_pandas(rows, source=path, name=split, digest=md5, targets="label")
            mlflow.log_input(found[split], context=split, model=LoggedModelInput(model_id))
        mlflow.log_metrics(self.test_metrics, model_id=model_id, dataset=found.get("test"))
        if self.parent_run_id:
            inputs = [
                DatasetInput(Dataset(**data.to_dict()), [InputTag("mlflow.data.context", split)])
                for split, data in found.items()
            ]
            mlflow.MlflowClient().log_inputs(self.parent_run_id, datasets=inputs)
