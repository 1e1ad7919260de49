"""Training runs: the config and its presets, the run layout, the data streams and the training
loop."""
