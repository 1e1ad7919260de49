"""The findings benchmark's verdicts: an ordering is claimed only when every seed of one system beats every seed of the
other, in the metric's own direction, and one seed on a side is never enough."""
import importlib.util
import json
import math
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
# the means and the seeds that would decide, from the spread measured (fewer seeds: marked as not decided yet)
@pytest.mark.parametrize("better, a, b, start", [
    ("higher", [5, 6, 7], [1, 2, 3], "reproduced (ranges apart)"),
    ("lower", [5, 6, 7], [1, 2, 3], "reversed (ranges apart)"),
    ("higher", [1, 5, 9], [0, 4, 8], "undecided: ranges overlap, means lean the paper's way"),
    ("lower", [1, 5, 9], [0, 4, 8], "undecided: ranges overlap, means lean against the paper"),
    ("higher", [5, 6], [1, 2, 3], "not decided yet (2 and 3 of 3 seeds): ranges apart so far, means lean the paper's way"),
    ("higher", [5], [], "waiting for seeds (1 and 0 of 3)"),
])
def test_demo_verdicts(better, a, b, start):
    assert findings.demo_verdict(a, b, better).startswith(start)


def test_seeds_needed_grows_as_the_gap_shrinks_against_the_spread():
    wide = findings.seeds_needed([0.0, 2.0, 4.0], [1.0, 3.0, 5.0])  # a gap of half a standard deviation
    near = findings.seeds_needed([0.0, 2.0, 4.0], [3.0, 5.0, 7.0])  # a gap of 1.5 standard deviations
    assert (wide, near) == (63, 7)  # 2 (2.80 / 0.5)^2 = 62.8 and 2 (2.80 / 1.5)^2 = 7.0
    assert findings.seeds_needed([1.0], [2.0, 3.0]) is None  # no spread from one seed
    assert findings.seeds_needed([1.0, 3.0], [3.0, 1.0]) is None  # equal means: nothing to find


@pytest.mark.parametrize("effect", [0.3, 0.5, 1.0])
def test_seeds_needed_give_the_power_they_promise(effect):
    "Checked against scipy's noncentral t: at the seeds returned, a two-sided t-test at 5% finds the gap about 80% of the time."
    from scipy import stats
    gap = effect * math.sqrt(2)  # seeds [-1, 1] a side: a pooled standard deviation of sqrt(2)
    n = findings.seeds_needed([-1.0, 1.0], [gap - 1, gap + 1])
    df, ncp = 2 * n - 2, effect * math.sqrt(n / 2)
    t = stats.t.ppf(0.975, df)
    power = 1 - stats.nct.cdf(t, df, ncp) + stats.nct.cdf(-t, df, ncp)
    assert 0.75 < power < 0.85, (n, power)


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


def fake_learning(editflam: float, keep: float, exact: float) -> dict:
    "The parts of a learning benchmark's figures that a findings record keeps."
    edit = lambda f, k: dict(editflam=f, keep_error=k, delta_multiflam=1.0,
                             sizes=dict(small=dict(editflam=f / 2, keep_error=k), large=dict(editflam=f, keep_error=k)))
    return dict(dialogues=2, seconds=dict(total=60.0), cot=dict(grammar_on=dict(edit=dict(exact_share=exact))),
                audio=dict(systems=dict(model=dict(edit=edit(editflam, keep)), truth=dict(edit=edit(20.0, 0.002)),
                                        codec=dict(edit=edit(15.0, 0.01)))))


def test_records_make_the_tables_verdicts_and_figure(tmp_path, monkeypatch):
    "A run's record keeps its figures and curve; the report and figure are made from the records alone."
    monkeypatch.setattr(findings, "RECORDS", tmp_path / "findings-demo")
    run = tmp_path / "run"; run.mkdir()
    resumed = [dict(step=s, lm=9.0, diff=9.0) for s in range(20, 101, 20)]  # killed before its first checkpoint
    rows = resumed + [dict(step=s, lm=1.0 / s, diff=0.5 / s) for s in range(20, 1001, 20)] + [dict(event="eval", step=1000)]
    (run / "log.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for seed in range(3):
        for system, flam in (("sct", 10.0), ("shared-noise", 2.0)):
            record = findings.make_record(f"{system}-s{seed}", run, fake_learning(flam + seed, 0.2, 0.25))
            findings.write_record(f"{system}-s{seed}", record)
    records = findings.finished()
    assert sorted(records) == [f"{s}-s{i}" for s in ("sct", "shared-noise") for i in range(3)]
    assert records["sct-s2"]["curve"][-1] == [1000, 0.001, 0.0005] and len(records["sct-s2"]["curve"]) == 50
    assert records["sct-s0"]["curve"][0] == [20, 0.05, 0.025]  # the rows logged again after a restart win and records["sct-s0"]["provenance"]["bench_seconds"] == 60
    assert findings.demo_values(records, "sct", "editFLAM") == [10.0, 11.0, 12.0]
    assert findings.demo_values(records, "sct", "exact edit diffs %") == [25.0] * 3
    text = findings.demo_report(records, ["sct", "shared-noise"])
    assert "| Forcing beats one shared noise level on edits | editFLAM | reproduced (ranges apart)" in text
    assert "| ground truth |" in text and (tmp_path / "findings-demo.md").read_text() == text
    path = findings.demo_figure(records, ["sct", "shared-noise"], tmp_path / "fig.png")
    assert path.stat().st_size > 10_000 and not list(tmp_path.glob(".*.tmp"))
