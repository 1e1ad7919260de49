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


# the forcing claims at the demo budget: decided only with three seeds a side and apart ranges; otherwise the lean of
# the means and the seeds that would decide, from the spread measured
@pytest.mark.parametrize("better, a, b, start", [
    ("higher", [5, 6, 7], [1, 2, 3], "reproduced (ranges apart)"),
    ("lower", [5, 6, 7], [1, 2, 3], "reversed (ranges apart)"),
    ("higher", [1, 5, 9], [0, 4, 8], "undecided: ranges overlap, means lean the paper's way"),
    ("lower", [1, 5, 9], [0, 4, 8], "undecided: ranges overlap, means lean against the paper"),
    ("higher", [5, 6], [1, 2, 3], "waiting for seeds (2 and 3 of 3)"),
])
def test_demo_verdicts(better, a, b, start):
    assert findings.demo_verdict(a, b, better).startswith(start)


def test_seeds_needed_grows_as_the_gap_shrinks_against_the_spread():
    wide = findings.seeds_needed([0.0, 2.0, 4.0], [1.0, 3.0, 5.0])  # a gap of half a standard deviation
    near = findings.seeds_needed([0.0, 2.0, 4.0], [3.0, 5.0, 7.0])  # a gap of 1.5 standard deviations
    assert wide is None and near is not None and near <= 3  # past 20 seeds; the expected range of 2 or 3 draws fits
    assert findings.seeds_needed([1.0], [2.0, 3.0]) is None  # no spread from one seed


def test_edit_size_small_and_large():
    spec = importlib.util.spec_from_file_location("learning", Path(__file__).parents[1] / "benchmarks" / "learning.py")
    learning = importlib.util.module_from_spec(spec); spec.loader.exec_module(learning)
    from audiochat.core.scene import Scene
    before = Scene.from_dict({"duration": 8, "sources": [
        {"id": "fx1", "kind": "sfx", "caption": "steady rain falling", "start": 0, "end": 8, "loudness_db": -30}]})
    louder = Scene.from_dict({**before.to_dict(), "sources": [{**before.sources[0].to_dict(), "loudness_db": -26}]})
    much = Scene.from_dict({**before.to_dict(), "sources": [{**before.sources[0].to_dict(), "loudness_db": -15}]})
    assert learning.edit_size(before, louder) == "small" and learning.edit_size(before, much) == "large"
    assert learning.edit_size(louder, before) == "small" and learning.edit_size(before, before) == "large"
