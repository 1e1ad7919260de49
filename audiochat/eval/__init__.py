"""Evaluation: the metrics and the harness that scores every system on the same dialogues."""
