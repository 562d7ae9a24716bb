"""Kiln's stage adapters, Prefect flows and CLI: the layer that does I/O, tracking and
orchestration around the pure parts in `components`."""
