"benchmarks/learning.py on a tiny run: only invariants that hold whatever a barely trained model writes."
import importlib.util
import json
from pathlib import Path

import pytest

from audiochat.core.edits import edited_spans
from audiochat.core.scene import Scene
from audiochat.eval.scorer import scorer_examples, train_scorer
from audiochat.sim.data import build_eval, load_turn, read_records
from audiochat.sim.stories import SUBTASKS
from audiochat.training.train import train_tiny_run

BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "learning.py"


@pytest.fixture(scope="module")
def learning():
    spec = importlib.util.spec_from_file_location("learning_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("learning")
    build_eval(root / "split", dialogues=1, progress=False)
    scorer, _ = train_scorer(scorer_examples(range(3)), steps=5)
    scorer.save(root / "scorer")
    train_tiny_run(root / "run", steps=3)
    return root


def _args(files, run, out, *more):
    return ["--run", str(run), "--split", str(files / "split"), "--scorer", str(files / "scorer"), "--dialogues", "2",
            "--steps", "2", "--max-tokens", "24", "--out", str(out), "--quiet", *more]


def _check_ranges(d, where="result"):
    "Every share, recall and F1 lies in [0, 1]; every count is a non-negative int."
    for k, v in d.items():
        if isinstance(v, dict): _check_ranges(v, f"{where}.{k}")
        elif k.endswith("_share") or k in ("class_recall", "f1"): assert v is None or 0 <= v <= 1, (where, k, v)
        elif k in ("n", "valid", "invalid", "words", "failed"): assert isinstance(v, int) and v >= 0, (where, k, v)


def _check_cot(c, stories, edits):
    for g in ("grammar_off", "grammar_on"):
        s, e = c[g]["story"], c[g]["edit"]
        assert s["n"] == stories == s["valid"] + s["invalid"]
        assert e["n"] == edits == e["valid"] + e["words"] + e["invalid"]
        assert sum(x["n"] for x in e["subtasks"].values()) == edits
        assert e["exact_share"] <= e["source_share"] <= e["subtask_share"]


def test_benchmark_writes_every_figure(learning, files, tmp_path, capsys):
    out = tmp_path / "figures" / "learning.json"
    assert learning.main(_args(files, files / "run", out, "--free-form-items", "2", "--held-out", "2", "--curve")) == 0
    r = json.loads(out.read_text())
    for k in ("run", "split", "dialogues", "thinks", "cot", "free_form", "understanding", "audio", "curve", "seconds"):
        assert k in r
    records = list(read_records(files / "split"))
    assert r["dialogues"] == len(records) == 1 and r["thinks"]
    edits = sum(len(x["turns"]) - 1 for x in records)
    _check_ranges(r)
    _check_cot(r["cot"], 1, edits)
    for g in ("grammar_off", "grammar_on"):  # one edit of a sound the story lacks per dialogue with edits
        w = r["cot"][g]["edit"]["refusal"]
        assert w["absent"] == 1 and all(w[k] is None or 0 <= w[k] <= 1 for k in ("words_on_absent", "words_on_real", "words_right"))
    assert "keep_error" in r["audio"]["systems"]["truth"]["edit"]
    _check_cot(r["free_form"], 2, 2)
    for g in ("grammar_off", "grammar_on"):  # the held-out phrasings: stories only, every request asks a length
        s = r["held_out"][g]["story"]
        assert s["n"] == 2 == s["valid"] + s["invalid"] and s["duration_share"] is not None
    for k in ("whole", "cut"):
        u = r["understanding"][k]
        assert u["n"] == 1 == u["valid"] + u["invalid"]
    a = r["audio"]
    for system in ("model", "truth", "codec"):
        s = a["systems"][system]
        assert s["story"]["n"] == 1 and s["edit"]["n"] == edits and 0 <= s["edit"]["failed"] <= edits
    assert a["systems"]["truth"]["story"]["failed"] == 0 == a["systems"]["codec"]["edit"]["failed"]
    for ref in ("model_over_truth", "model_over_codec"): assert {"story_multiflam", "delta_multiflam", "editflam"} <= set(a[ref])
    assert set(a["plan_vs_render"]) == {"n", "model_multiflam", "tools_multiflam", "mel_distance"}
    assert [p["step"] for p in r["curve"]] == [3] and (out.parent / "learning_curve.png").stat().st_size > 0
    assert r["seconds"]["per_dialogue"] > 0
    printed = capsys.readouterr().out
    assert "chain of thought" in printed and "understanding" in printed and "plan vs render" in printed
    assert "held-out phrasings" in printed


def test_grammar_on_alone_gives_the_same_figures(learning, files, tmp_path):
    "The findings' lighter form (--grammar on --no-understanding): the full form's grammar-on figures, nothing else."
    full, light = tmp_path / "full.json", tmp_path / "light.json"
    common = ("--free-form", "", "--held-out", "0", "--no-audio")
    assert learning.main(_args(files, files / "run", full, *common)) == 0
    assert learning.main(_args(files, files / "run", light, *common, "--grammar", "on", "--no-understanding")) == 0
    a, b = json.loads(full.read_text()), json.loads(light.read_text())
    assert b["cot"]["grammar_on"] == a["cot"]["grammar_on"] and "grammar_off" not in b["cot"]
    assert b["understanding"] is None and a["understanding"] is not None


def test_run_without_chain_of_thought_gets_audio_figures_only(learning, files, tmp_path):
    run = train_tiny_run(tmp_path / "no-cot", steps=2, codec_dir=files / "run" / "codec", overrides=["--data.cot=false"])
    out = tmp_path / "learning.json"
    assert learning.main(_args(files, run, out, "--curve")) == 0
    r = json.loads(out.read_text())
    assert not r["thinks"] and r["cot"] is r["free_form"] is r["understanding"] is r["curve"] is None
    assert r["audio"]["systems"]["model"]["story"]["n"] == 1
    _check_ranges(r)


@pytest.mark.parametrize("what", ["run", "split", "checkpoints"])
def test_bad_input_is_one_line(learning, files, tmp_path, capsys, what):
    (tmp_path / "empty").mkdir()
    run = {"run": tmp_path / "missing", "checkpoints": tmp_path / "empty"}.get(what, files / "run")
    args = _args(files, run, tmp_path / "x.json", "--no-audio")
    if what == "split": args[args.index("--split") + 1] = str(tmp_path / "no-split")
    assert learning.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("learning.py: error:") and "\n" not in err and not (tmp_path / "x.json").exists()


def test_the_truth_is_judged_right_and_no_change_wrong(learning, files):
    for r in read_records(files / "split"):
        scenes = [Scene.from_dict(t["scene"]) for t in r["turns"]]
        s0, request = scenes[0], r["turns"][0]["user"]
        row = learning.story_row("scene", s0, set(learning.labels(s0, speech=False)), learning.speaker_count(s0),
                                 learning.requested_seconds(request, s0.duration))
        assert row["recall"] == 1 and row["speakers"] and row["duration"]
        for j in range(1, len(scenes)):
            sub = r["turns"][j]["subtask"]
            target, expect = learning.truth_expectation(scenes[j - 1], scenes[j])
            assert learning.judge_edit(scenes[j - 1], scenes[j], sub, target, expect) == dict(subtask=True, source=True, exact=True)
            assert not any(learning.judge_edit(scenes[j - 1], scenes[j - 1], sub, target, expect).values())
            assert not any(learning.judge_edit(scenes[j - 1], None, sub, target, expect).values())


def test_free_form_items_are_consistent(learning):
    items = json.loads(learning.FREE_FORM.read_text())
    assert len(items["stories"]) >= 10 and len(items["edits"]) >= 10
    for s in items["stories"]:
        assert s["speakers"] >= 1 and 0 < s["seconds"] <= 15
        for c in s["sfx"]: assert learning.sound_class(c, "sfx") == c
        if s["music"]: assert learning.sound_class(s["music"], "music") == s["music"]
    for e in items["edits"]:
        base = Scene.from_dict(items["bases"][e["base"]]["scene"])
        assert e["subtask"] in SUBTASKS
        assert (e["target"].startswith("sfx:") if e["subtask"] == "add" else e["target"] in base.ids)


def test_plan_vs_render_of_a_true_scene(learning, files):
    from audiochat.codec.training import SpectralDistance
    from audiochat.eval.scorer import TinyFLAM
    scene, audio = load_turn(next(read_records(files / "split"))["turns"][0])
    p = learning.plan_vs_render(TinyFLAM.load(files / "scorer"), SpectralDistance(), audio, scene)
    assert set(p) == {"model", "tools", "mel"} and p["mel"] >= 0 and 0 <= p["model"] <= 100 and 0 <= p["tools"] <= 100


def test_keep_error_looks_only_outside_the_edited_span(learning):
    import torch

    from audiochat.codec.training import SpectralDistance
    g = torch.Generator().manual_seed(0)
    a = torch.randn(2, 3 * 16000, generator=g) * 0.1
    b = a.clone()
    b[:, 16000:32000] = torch.randn(2, 16000, generator=g) * 0.1  # changed between 1 and 2 s only
    d = SpectralDistance()
    inside = learning.keep_error(d, a, b, [(0.9, 2.1)])  # the change's frames (and their windows) are left out
    outside = learning.keep_error(d, a, b, [(2.5, 3.0)])
    assert inside is not None and outside is not None and inside < 0.02 < outside
    assert learning.keep_error(d, a, a, []) == 0
    assert learning.keep_error(d, a, b, [(0, 3.5)]) is None  # nothing left outside


def test_edited_spans_cover_where_the_source_was_and_is(learning):
    before = Scene.from_dict(dict(duration=6, sources=[dict(id="fx1", kind="sfx", caption="a dog barking", start=1, end=2),
                                                       dict(id="fx2", kind="sfx", caption="rain", start=0, end=6)]))
    moved = Scene.from_dict(dict(duration=6, sources=[dict(id="fx1", kind="sfx", caption="a dog barking", start=4, end=5),
                                                      dict(id="fx2", kind="sfx", caption="rain", start=0, end=6)]))
    assert sorted(edited_spans(before, moved)) == [(1, 2), (4, 5)]
    removed = Scene(tuple(s for s in before.sources if s.id != "fx1"), 6)
    assert edited_spans(before, removed) == [(1, 2)]
