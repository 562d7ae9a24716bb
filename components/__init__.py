"""Kiln's reusable parts: pure, typed and free of tracking or orchestration tools."""
