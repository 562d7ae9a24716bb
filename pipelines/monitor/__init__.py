"""The production loop: `kiln monitor` watching the served champion's traffic, and the labelling queue."""
