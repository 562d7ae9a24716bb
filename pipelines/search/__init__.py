"""The hyperparameter search: the Prefect flow whose tasks are Optuna trials (flow) and the
study it keeps (study)."""
