"""A run: its config (presets, a YAML file, dotted overrides) and its folder (the layout, a lock while
a run writes it, checkpoints saved and loaded back). Training writes runs; serving and evaluation
read them without importing training."""
