"""The scheduled retrain: the Prefect flow (flow), new batches checked in (intake), its
summary (summary) and failure notifications (notify)."""
