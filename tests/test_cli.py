"""The console script, run as a user runs it."""
import json
import subprocess
import sys
from pathlib import Path

import soundfile as sf

from audiochat.core.scene import Scene

AUDIOCHAT = Path(sys.executable).parent / "audiochat"  # the installed console script


def run(*args, cwd=None):
    return subprocess.run([str(AUDIOCHAT), *args], capture_output=True, text=True, cwd=cwd)


def test_help_lists_commands():
    r = run("--help")
    assert r.returncode == 0 and "demo" in r.stdout


def test_unknown_command_suggests():
    r = run("dmeo")
    assert r.returncode == 2 and "Did you mean: demo?" in r.stderr


def test_demo_writes_outputs(tmp_path):
    r = run("demo", "--out", str(tmp_path / "demo"), "--steps", "2")
    assert r.returncode == 0, r.stderr
    out = tmp_path / "demo"
    page = (out / "report.html").read_text()  # the shipped model's three jobs, and its benchmark figures
    for part in ("shipped model: tell", "rendering of the same scene", "shipped model: edit", "the truth",
                 "shipped model: understand", "learning benchmark figures"):
        assert part in page, part
    assert "| figure | shipped model |" in r.stdout
    info = sf.info(str(out / "story.wav"))
    assert info.channels == 2 and info.samplerate == 16000 and info.duration > 1
    assert (out / "story.png").stat().st_size > 10_000
    scene = Scene.from_json((out / "scene.json").read_text())
    assert len(scene.sources) >= 2
    assert str(out / "story.wav") in r.stdout
    json.loads((out / "scene.json").read_text())


def test_demo_missing_sample_is_clear(tmp_path):
    r = run("demo", "--out", str(tmp_path), "--sample", str(tmp_path / "none"))
    assert r.returncode != 0 and "sample folder not found" in r.stderr
