"""The findings benchmark's verdicts: an ordering is claimed only when every seed of one system beats every seed of the
other, in the metric's own direction, and one seed on a side is never enough."""
import importlib.util
from pathlib import Path

import pytest

spec = importlib.util.spec_from_file_location("findings", Path(__file__).parents[1] / "benchmarks" / "findings.py")
findings = importlib.util.module_from_spec(spec); spec.loader.exec_module(findings)


def summary(**systems):
    "`audiochat eval`'s summary shape: one row per run (`sct-s0`, ...), each with its tables."
    return {name: dict(available=True, edit=dict(editflam=v, delta_multiflam=v)) for name, v in systems.items()}


@pytest.mark.parametrize("better, a, b, expected", [
    ("higher", [5, 6], [1, 2], "reproduced as an ordering"),
    ("higher", [1, 2], [5, 6], "not reproduced (the opposite ordering)"),
    ("higher", [1, 6], [2, 5], "not reproduced (the seeds' ranges overlap)"),
    ("lower", [1, 2], [5, 6], "reproduced as an ordering"),  # lower is better: a's values all below b's
    ("lower", [9, 30], [4, 16], "not reproduced (the seeds' ranges overlap)"),
    ("lower", [20, 30], [4, 16], "not reproduced (the opposite ordering)"),
    ("higher", [5, 6], [1], "the paper's ordering with one seed on a side: not established"),
    ("lower", [5, 6], [1], "not reproduced (the opposite ordering; one seed)"),
])
def test_verdicts_follow_the_metric_direction(better, a, b, expected):
    rows = {**{f"sct-s{i}": v for i, v in enumerate(a)}, **{f"dense-s{i}": v for i, v in enumerate(b)}}
    metric = "editflam" if better == "higher" else "delta_multiflam"
    verdict, figures = findings.verdict(summary(**rows), "edit", metric, better, "sct", "dense")
    assert verdict == expected and figures.startswith("sct ")


def test_a_missing_system_is_not_measurable():
    assert findings.verdict(summary(**{"sct-s0": 1.0}), "edit", "editflam", "higher", "sct", "dense")[0] == "not measurable at this scale"
