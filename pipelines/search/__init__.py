"""The hyperparameter search: the Prefect flow whose tasks are Optuna trials (flow), the
study it keeps (study), and what a finished search reports (summary)."""
