"""The production loop's parts: the served model's inference log, the watch over a window
of its traffic, and the queue of logged texts worth labelling."""
