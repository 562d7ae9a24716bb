"""MLflow runs: a parent run per pipeline execution and a child per stage (runs), which
process owns each (owners), and every metric name Kiln logs (metrics)."""
