"""The dialogue dataset: seeds and splits, determinism across worker counts, a killed-and-resumed build, records,
StoryGen-Eval-mini composition, the committed samples, the CLI and bad input."""
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from audiochat.cli import main
from audiochat.core.scene import Scene
from audiochat.sim.copilot import check_edit
from audiochat.sim.data import (
    EVAL_SEED_RANGE,
    RUN_STRIDE,
    TRAIN_SEED_RANGE,
    DataConfig,
    build,
    build_eval,
    data_preset,
    dialogue_seed,
    dialogue_subtasks,
    eval_config,
    format_dialogue,
    load_turn,
    read_records,
)
from audiochat.sim.stories import SUBTASKS

ROOT = Path(__file__).parent.parent
SAMPLES = ROOT / "data_samples" / "dialogues"
SMALL = DataConfig(dialogues=4, shard_size=1, edits=1, max_duration=6)


def snapshot(out):
    "Records with audio paths relative to `out`, plus a hash of every audio file."
    recs = []
    for r in read_records(out):
        for t in r["turns"]:
            p = Path(t["audio"])
            t["audio"] = str(p.relative_to(Path(out).resolve() if p.is_absolute() else out))
            t["sha1"] = hashlib.sha1(p.read_bytes()).hexdigest()
        recs.append(r)
    return recs


# ---------------------------------------------------------------- seeds and splits
def test_eval_seeds_are_disjoint_from_every_training_seed():
    last_run = TRAIN_SEED_RANGE[1] // RUN_STRIDE - 1
    largest_train = dialogue_seed(DataConfig(seed=last_run, dialogues=RUN_STRIDE), RUN_STRIDE - 1)
    ev = eval_config()
    eval_seeds = {dialogue_seed(ev, i) for i in range(ev.dialogues)}
    assert largest_train < TRAIN_SEED_RANGE[1] <= EVAL_SEED_RANGE[0] == min(eval_seeds)
    train = {dialogue_seed(data_preset("small", seed=s), i) for s in (0, 1, last_run) for i in range(data_preset("small").dialogues)}
    assert not train & eval_seeds
    with pytest.raises(ValueError, match="train seed must be"):
        DataConfig(seed=last_run + 1)


def test_eval_split_covers_the_six_subtasks_evenly():
    ev = eval_config()
    assert (ev.dialogues, ev.edits, ev.split, ev.mistake_rate) == (60, 2, "eval", 0.0)
    counts = Counter(s for i in range(ev.dialogues) for s in dialogue_subtasks(ev, i))
    assert counts == Counter({s: 20 for s in SUBTASKS})
    assert dialogue_subtasks(DataConfig(), 0) is None  # training subtasks come from the dialogue's seed


@pytest.mark.parametrize("kwargs, message", [(dict(split="test"), "split must be"), (dict(dialogues=0), "must be >= 1"),
                                             (dict(edits=9), "edits must be"), (dict(max_duration=30), "max_duration")])
def test_bad_configs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataConfig(**kwargs)


# ---------------------------------------------------------------- building
@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    "An uninterrupted single-process build of SMALL."
    out = tmp_path_factory.mktemp("reference")
    summary = build(out, SMALL, workers=1, progress=False)
    return out, summary


def test_build_summary_and_records(reference):
    out, summary = reference
    assert summary["dialogues"] + sum(summary["rejected"].values()) == SMALL.dialogues
    assert summary["shards"] == 4 and summary["turns"] == 2 * summary["dialogues"] and summary["hours"] > 0
    assert json.loads((out / "summary.json").read_text())["dialogues"] == summary["dialogues"]
    records = list(read_records(out))
    assert [r["seed"] for r in records] == sorted(r["seed"] for r in records)
    for r in records:
        assert r["split"] == "train" and r["turns"][0]["subtask"] == "story" and r["turns"][1]["subtask"] in SUBTASKS
        scenes = []
        for t in r["turns"]:
            assert t["user"] and t["tool_calls"][-1] == "render_scene"
            scene, x = load_turn(t)
            assert x.shape == (2, round(scene.duration * 16000)) and float(x.abs().max()) > 0.01
            scenes.append(scene)
        assert check_edit(scenes[0], scenes[1], r["turns"][1]["subtask"]) is None
    assert "[1] user" in format_dialogue(records[0])


@pytest.mark.slow  # two spawned worker processes import torch: about 25 s on a busy 2-core machine
def test_parallel_build_gives_the_same_records(reference, tmp_path):
    out, _ = reference
    build(tmp_path, SMALL, workers=2, progress=False)
    assert snapshot(tmp_path) == snapshot(out)


def test_killed_build_resumes_without_losing_or_duplicating_shards(reference, tmp_path):
    out, _ = reference
    cmd = [str(Path(sys.executable).parent / "audiochat"), "data", "build", "--out", str(tmp_path), "--dialogues", "4",
           "--shard-size", "1", "--edits", "1", "--max-duration", "6", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + 120
    while not (tmp_path / "shard-00001").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(p.name for p in tmp_path.glob("shard-*"))
    assert "shard-00001" in done and len(done) < 4, done  # killed part-way
    for p in tmp_path.glob("shard-*"):  # every finished shard is complete
        assert (p / "stats.json").exists() and (p / "records.jsonl").exists()
    summary = build(tmp_path, SMALL, workers=1, progress=False)
    assert summary["built_now"] == 4 - len(done)
    assert not list(tmp_path.glob(".tmp-*"))
    assert snapshot(tmp_path) == snapshot(out)


def test_resume_refuses_another_config(reference):
    out, _ = reference
    with pytest.raises(ValueError, match="another config"):
        build(out, replace(SMALL, edits=2), progress=False)
    with pytest.raises(ValueError, match="workers must be"):
        build(out, SMALL, workers=0)


def test_read_records_of_an_empty_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no finished shards"):
        next(read_records(tmp_path))


# ---------------------------------------------------------------- command line
def test_cli_build_eval_and_show(tmp_path, capsys):
    assert main(["data", "build", "--out", str(tmp_path / "b"), "--dialogues", "1", "--edits", "1", "--max-duration", "5", "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "dialogues" in out and "rejected" in out and "dialogues/s" in out
    assert main(["data", "show", str(tmp_path / "b")]) == 0
    assert "[1] user" in capsys.readouterr().out
    assert main(["data", "show", str(tmp_path / "nothing")]) == 1
    assert "no finished shards" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "build", "--preset", "huge", "--out", str(tmp_path)])


@pytest.mark.slow
def test_eval_build_three_dialogues_cover_each_subtask_once(tmp_path):
    summary = build_eval(tmp_path, dialogues=3, progress=False)
    assert summary["rejected"] == {} and summary["subtasks"] == {**{s: 1 for s in SUBTASKS}, "story": 3}
    assert {r["seed"] for r in read_records(tmp_path)} == {EVAL_SEED_RANGE[0] + i for i in range(3)}


# ---------------------------------------------------------------- committed samples
def test_data_samples():
    size = sum(p.stat().st_size for p in SAMPLES.rglob("*") if p.is_file())
    assert size < 5_000_000
    records = list(read_records(SAMPLES))
    assert len(records) == 6
    assert Counter(t["subtask"] for r in records for t in r["turns"]) == Counter({"story": 6, **{s: 2 for s in SUBTASKS}})
    import soundfile as sf
    for r in records:
        scenes = [Scene.from_dict(t["scene"]) for t in r["turns"]]
        for t, s in zip(r["turns"], scenes):
            info = sf.info(t["audio"])
            assert (info.samplerate, info.channels, info.format) == (16000, 2, "FLAC")
            assert abs(info.duration - s.duration) < 0.01
        for a, b, t in zip(scenes, scenes[1:], r["turns"][1:]):
            assert check_edit(a, b, t["subtask"]) is None


def test_corrupt_record_is_a_clear_error(tmp_path):
    shard = tmp_path / "shard-00000"
    shard.mkdir()
    (shard / "records.jsonl").write_text('{"id": "x", "turns": []}\n{truncated\n')
    (shard / "stats.json").write_text('{"dialogues": 2}')  # a finished shard whose records file was damaged later
    with pytest.raises(ValueError, match="records.jsonl line 2 is not a valid JSON record"):
        list(read_records(tmp_path))
