"""The multi-objective search for the best small model: its space and one trial."""
