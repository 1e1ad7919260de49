"""The evaluation harness: end to end on a tiny run and the baselines, table shapes, the cascade's script writer,
and bad input (sample rates, empty scenes, hypotheses without speech, unknown captions, failing systems)."""
import json
import math

import pytest
import torch

from audiochat.cli import main as cli_main
from audiochat.core.audio import SAMPLE_RATE, resample
from audiochat.core.edits import diff
from audiochat.core.scene import Scene, Source
from audiochat.eval.evaluate import (
    as_eval_audio,
    captioning_multiflam,
    evaluate,
    resolve_split,
    summarize,
    understanding_scores,
)
from audiochat.eval.metrics import multiflam
from audiochat.eval.report import eval_main, format_tables
from audiochat.eval.scorer import scorer_examples, train_scorer
from audiochat.eval.systems import (
    CascadeSystem,
    OracleSystem,
    Output,
    ScriptWriter,
    SilenceSystem,
    System,
    find_source,
    make_system,
    run_role,
    write_edit,
    write_story,
)
from audiochat.runs.config import resolve
from audiochat.serve.replies import ChatError
from audiochat.sim.agents import AgentError
from audiochat.sim.data import build_eval, load_turn, read_records
from audiochat.training.train import train_tiny_run


@pytest.fixture(scope="module")
def records(split):
    return list(read_records(split))


@pytest.fixture(scope="module")
def good_scorer():
    "The metrics notebook's scorer (150 scenes, 1,500 steps): it tells sounds from noise."
    model, _ = train_scorer(scorer_examples(range(150)), steps=1500)
    return model


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("run") / "tiny", steps=3)


def _mean(rows, key):
    v = [r[key] for r in rows if r.get(key) is not None]
    return sum(v) / len(v)


@pytest.mark.slow
def test_end_to_end(split, good_scorer, tiny_run):
    "Oracle, cascade, a tiny run and the silence/noise floors on 2 dialogues: every turn scored or counted as failed."
    systems = ["oracle", "cascade", make_system(f"tiny={tiny_run}", steps=4), "silence", "noise"]
    res = evaluate(systems, split, good_scorer, progress=False)
    json.dumps(res)  # JSON-ready as it is
    s = summarize(res)
    assert list(s) == ["oracle", "cascade", "tiny", "silence", "noise"]
    story = lambda n: [t for t in res["systems"][n]["turns"] if t["task"] == "story"]
    # the ground truth is heard where its scene says; silence and noise are not
    assert _mean(story("oracle"), "multiflam") > _mean(story("silence"), "multiflam") + 30
    assert _mean(story("oracle"), "multiflam") > _mean(story("noise"), "multiflam") + 20
    assert s["oracle"]["story"]["failed"] == 0 and s["oracle"]["edit"]["failed"] == 0
    assert s["oracle"]["understand"]["tcpwer"] == 0.0
    assert s["silence"]["understand"]["tcpwer"] == 100.0
    for name in s:  # every turn of every dialogue is accounted for
        d = s[name]
        assert d["story"]["n"] == 2 and d["edit"]["n"] == 4
        assert sum(v["n"] for v in d["edit"]["subtasks"].values()) == 4
    assert "understand" not in s["cascade"]
    tiny = [t for t in res["systems"]["tiny"]["turns"]]
    assert all(t["ok"] or t["error"] for t in tiny)  # a failure always says why
    tables = format_tables(s, dict(dialogues=2))
    for section in ("## Story generation", "## Editing", "### Edit subtasks", "## Understanding", "## Architecture ablation"):
        assert section in tables
    assert "| tiny (AudioChat (SCT)) |" in tables and "SCT: 11.7 / 18.6" in tables  # the paper's row beside ours


def test_table_shapes(split, scorer):
    "One row per system in each table; the subtask table has one column per subtask present."
    res = evaluate([OracleSystem(), SilenceSystem()], split, scorer, progress=False)
    tables = format_tables(summarize(res))
    story = tables.split("## Story generation")[1].split("##")[0]
    assert sum(line.startswith("| oracle") or line.startswith("| silence") for line in story.splitlines()) == 2
    header = next(line for line in tables.split("### Edit subtasks")[1].splitlines() if line.startswith("| system"))
    subtasks = {t["subtask"] for r in read_records(split) for t in r["turns"][1:]}
    assert header.count("|") == len(subtasks) + 2
    assert "(no dit, dense, mot or sct run given)" in tables


def test_cli_writes_tables(split, scorer, tmp_path, capsys):
    out = tmp_path / "eval"
    scorer.save(tmp_path / "scorer")
    assert eval_main(["--baselines", "oracle,silence", "--split", str(split), "--dialogues", "1", "--out", str(out),
                      "--scorer", str(tmp_path / "scorer"), "--no-progress"]) == 0
    assert (out / "tables.md").read_text().startswith("# StoryGen-Eval-mini results")
    doc = json.loads((out / "results.json").read_text())
    assert doc["meta"]["dialogues"] == 1 and set(doc["summary"]) == {"oracle", "silence"}
    assert (out / "plots" / "story_multiflam.png").stat().st_size > 0
    assert "## Editing" in capsys.readouterr().out


def test_cli_bad_arguments(split, capsys):
    assert cli_main(["eval", "--baselines", "orcale", "--split", str(split)]) == 1
    assert "unknown baseline 'orcale'" in capsys.readouterr().err
    assert cli_main(["eval", "--baselines", "oracle", "--split", str(split), "--dialogues", "0"]) == 1
    assert cli_main(["eval", "--baselines", "none", "--split", str(split)]) == 1
    assert "nothing to evaluate" in capsys.readouterr().err
    assert cli_main(["eval", "--split", str(split / "missing")]) == 1
    assert "split folder not found" in capsys.readouterr().err


def test_missing_checkpoint_and_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint folder not found"): make_system(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no built split"): resolve_split(tmp_path / "empty")


def test_run_roles():
    "A run's role comes from its config."
    role = lambda *o: run_role(resolve("tiny", overrides=list(o)))
    assert role() == "sct"
    assert role("--model.arch=dit") == "dit"
    assert role("--model.arch=dense") == "dense" and role("--model.arch=mot") == "mot"
    assert role("--data.cot=false") == "no-cot"
    assert role("--loss.policy=shared") == "shared-noise"


# bad input ------------------------------------------------------------------------------------------------------

def test_sample_rates(records, scorer):
    "Audio at another rate is resampled, not misread: the same scores; a missing or invalid rate is an error."
    scene, x = load_turn(records[0]["turns"][0])
    y = as_eval_audio(resample(x, SAMPLE_RATE, 48_000), 48_000, scene.duration)
    assert y.shape == x.shape
    assert (y - x).abs().max() < 0.05
    assert multiflam(scorer, y, scene) == pytest.approx(multiflam(scorer, x, scene), abs=100 / len(scene.sources) + 1e-6)
    mono = as_eval_audio(x[:1], SAMPLE_RATE)
    assert mono.shape == (2, x.shape[1])
    for bad in (None, 0, -16_000, 16_000.0, True):
        with pytest.raises(ValueError, match="sample rate"): as_eval_audio(x, bad)
    with pytest.raises(ValueError, match="empty"): as_eval_audio(torch.zeros(2, 0), SAMPLE_RATE)
    with pytest.raises(ValueError, match="no audio"): as_eval_audio(None, SAMPLE_RATE)
    with pytest.raises(ValueError, match="NaN"): as_eval_audio(torch.full((2, 10), math.nan), SAMPLE_RATE)
    with pytest.raises(ValueError, match="mono or stereo"): as_eval_audio(torch.zeros(4, 100), SAMPLE_RATE)


def test_empty_scenes_and_no_speech(records, scorer):
    reference, audio = load_turn(records[0]["turns"][0])
    empty = Scene((), reference.duration)
    with pytest.raises(ValueError, match="no sources"): multiflam(scorer, audio, empty)
    u = understanding_scores(scorer, audio, empty, reference)  # a hypothesis with no speech and no sounds
    assert u["tcpwer_errors"] == u["tcpwer_words"] > 0  # every reference word deleted: 100%
    assert u["captioning_multiflam"] == 0.0  # it names none of the reference's sounds
    speech_only = Scene(tuple(s for s in reference.sources if s.kind == "speech"), reference.duration)
    assert captioning_multiflam(scorer, audio, empty, speech_only) is None  # nothing to name on either side
    perfect = understanding_scores(scorer, audio, reference, reference)
    assert perfect["tcpwer_errors"] == 0


def test_unknown_captions(records, scorer):
    "A caption no tool knows is still scored (a defined number); the cascade's writer rejects an unknown sound clearly."
    reference, audio = load_turn(records[0]["turns"][0])
    odd = Scene((Source("x", "sfx", 0.0, 2.0, caption="a zorblax humming quietly"),), reference.duration)
    v = captioning_multiflam(scorer, audio, odd, reference)
    assert v in (0.0, 100.0)
    with pytest.raises(AgentError, match="cannot tell"):
        find_source(reference, "the purple giraffe")
    with pytest.raises(ValueError):
        write_edit("Replace the music with a zorblaxian qwerty noise", Scene(
            (Source("m", "music", 0.0, 5.0, caption="happy upbeat music"),), 5.0))


class _Broken(System):
    "Fails in the ways a model can: an invalid chain of thought, or no audio at all."
    def __init__(self, mode):
        self.name, self.role, self.mode, self.understands = f"broken-{mode}", "sct", mode, True

    def story(self, turn):
        if self.mode == "cot": raise ChatError("no valid scene after 3 attempts", "{\"duration\":")
        return Output(None)

    def edit(self, turn, previous): raise AssertionError("an edit must not run when the story failed")

    def understand(self, turn): raise ChatError("no valid scene", "{")


def test_failures_are_counted(split, scorer):
    res = evaluate([_Broken("cot"), _Broken("silent")], split, scorer, progress=False)
    s = summarize(res)
    for name in s:
        assert s[name]["story"]["failed"] == 2 and s[name]["edit"]["failed"] == 4 and s[name]["understand"]["failed"] == 2
        assert s[name]["story"]["multiflam"] is None and s[name]["understand"]["tcpwer"] is None
    errors = [t["error"] for t in res["systems"]["broken-cot"]["turns"]]
    assert errors[0].startswith("ChatError") and "previous turn failed" in errors[1]
    assert "no audio" in res["systems"]["broken-silent"]["turns"][0]["error"]
    assert "0/2" not in format_tables(s).split("## Editing")[0]  # failures show in the story table


def test_duplicate_names(split, scorer):
    with pytest.raises(ValueError, match="unique"): evaluate([OracleSystem(), OracleSystem()], split, scorer, progress=False)


# the cascade's script writer --------------------------------------------------------------------------------------

def test_script_writer_reads_requests(records):
    for r in records:
        story = write_story(r["turns"][0]["user"])
        truth = Scene.from_dict(r["turns"][0]["scene"])
        assert {s.speaker for s in story.sources if s.kind == "speech"} == {s.speaker for s in truth.sources if s.kind == "speech"}
        assert {s.caption for s in story.sources if s.kind != "speech"} == {s.caption for s in truth.sources if s.kind != "speech"}
        for a, b in zip(r["turns"], r["turns"][1:]):
            before, after = Scene.from_dict(a["scene"]), Scene.from_dict(b["scene"])
            d, want = diff(before, write_edit(b["user"], before)), diff(before, after)
            assert [s.id for s in d.added] == [s.id for s in want.added] and d.removed == want.removed
            assert set(d.changed) == set(want.changed)


def test_cascade_edits_without_audio_context(records):
    "Each turn is rendered afresh from the text: kept sound effects are re-synthesised, the scene follows the edit."
    cascade = CascadeSystem(ScriptWriter())
    cascade.start(records[0])
    first = cascade.story(records[0]["turns"][0])
    again = CascadeSystem(ScriptWriter())
    again.start(records[0])
    assert torch.equal(again.story(records[0]["turns"][0]).audio, first.audio)  # deterministic per dialogue seed
    second = cascade.edit(records[0]["turns"][1], first)
    assert second.scene == write_edit(records[0]["turns"][1]["user"], first.scene)


def test_split_and_scorer_are_cached(tmp_path, monkeypatch):
    "The named split and the default scorer are made once into $AUDIOCHAT_CACHE, then reused."
    import audiochat.eval.evaluate as ev
    monkeypatch.setenv("AUDIOCHAT_CACHE", str(tmp_path))
    builds, trainings = [], []
    monkeypatch.setattr(ev, "build_eval", lambda out, progress=True: builds.append(out) or build_eval(out, dialogues=1, progress=False))
    quick = lambda examples, steps: trainings.append(steps) or train_scorer(examples, steps=5)
    monkeypatch.setattr(ev, "train_scorer", quick)
    monkeypatch.setattr(ev, "scorer_examples", lambda seeds: scorer_examples(range(2)))
    assert ev.resolve_split("storygen-eval-mini") == tmp_path / "storygen-eval-mini"
    assert ev.resolve_split("storygen-eval-mini") == tmp_path / "storygen-eval-mini"
    assert len(builds) == 1 and len(list(read_records(tmp_path / "storygen-eval-mini"))) == 1
    a, b = ev.load_scorer(), ev.load_scorer()
    assert trainings == [1500]  # trained once, loaded the second time
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not list(tmp_path.glob("*.tmp*"))  # nothing half-written left behind


def test_codec_ceiling_row(split, records, scorer, tiny_run, tmp_path):
    "The ground truth through a run's codec: same length as the truth, scored in the story and edit tables, no understanding."
    from audiochat.eval.report import format_tables
    from audiochat.eval.systems import CodecCeilingSystem, codec_ceilings
    run = make_system(f"tiny={tiny_run}", steps=2)
    ceilings = codec_ceilings([run, make_system("oracle"), run])
    assert len(ceilings) == 1 and ceilings[0].role == "codec" and not ceilings[0].understands
    out = ceilings[0].story(records[0]["turns"][0])
    truth = make_system("oracle").story(records[0]["turns"][0])
    assert out.audio.shape == truth.audio.shape and out.scene == truth.scene and torch.isfinite(out.audio).all()
    res = evaluate([ceilings[0]], split, scorer, dialogues=1, progress=False)
    s = summarize(res)[ceilings[0].name]
    assert s["story"]["n"] == 1 and s["story"]["failed"] == 0 and "understand" not in s
    tables = format_tables(summarize(res))
    assert "ground truth through the codec" in tables.split("## Editing")[0] and "not comparable with papers" in tables
    assert isinstance(make_system(f"codec:{tiny_run / 'codec'}"), CodecCeilingSystem)
