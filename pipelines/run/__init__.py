"""`kiln run`: the Prefect flow over dvc.yaml's DAG (flow) and the one way a stage is run
(executor)."""
