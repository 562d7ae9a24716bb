"""Data sources, validation, splitting and augmentation of labelled text."""
