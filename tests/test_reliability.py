"""Reliability: bad input gets the error type of its layer (never a stray exception), nothing is lost when runs or
builds are killed or mixed, sizes are checked before work starts. docs/RELIABILITY.md lists the classes tried here.

The fuzzers run a fast subset by default and thousands of cases with `-m slow`."""
import json
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiochat.core.scene import FIELD_ORDER, Scene, SceneError, Source

FAST, SLOW = 150, 3000
FUZZ = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


# ---- the scene parser ----
VALID = {"duration": 8, "sources": [
    {"id": "s1", "kind": "speech", "speaker": "narrator", "text": "Once upon a time.", "start": 0.5, "end": 3, "loudness_db": -20},
    {"id": "rain", "kind": "sfx", "caption": "rain on a window", "start": 0, "end": 8, "pan": -0.4}]}

numbers = st.one_of(st.integers(), st.integers(min_value=10 ** 300, max_value=10 ** 400), st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=30))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.one_of(st.sampled_from(FIELD_ORDER + ("duration", "sources")), st.text(max_size=8)), inner, max_size=5)),
                           max_leaves=20)


@st.composite
def mutated_scenes(draw):
    "The valid scene with some fields replaced by arbitrary JSON values, dropped or added."
    d = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 4))):
        target = draw(st.sampled_from(["scene", 0, 1]))
        srcs = d.get("sources")
        node = d if target == "scene" else (srcs[target] if isinstance(srcs, list) and len(srcs) > target else None)
        if not isinstance(node, dict): continue
        key = draw(st.sampled_from(sorted(node) + ["volume", "duration"]))
        action = draw(st.sampled_from(["replace", "drop"]))
        if action == "drop": node.pop(key, None)
        else: node[key] = draw(json_values)
    return d


def parse(obj):
    "Parse `obj` (text or dict); only a Scene or a SceneError may come out."
    try:
        s = Scene.from_json(obj) if isinstance(obj, (str, bytes)) else Scene.from_dict(obj)
    except SceneError as e:
        assert e.field and e.rule and len(str(e)) < 2000, str(e)[:300]
        return None
    assert isinstance(s, Scene) and all(isinstance(x, Source) for x in s.sources)
    assert Scene.from_json(s.to_json()) == s  # what parses, round-trips
    return s


def fuzz_scene_dicts(n):
    @settings(max_examples=n, **FUZZ)
    @given(st.one_of(mutated_scenes(), json_values))
    def run(d): parse(d)
    run()


def fuzz_scene_texts(n):
    @settings(max_examples=n, **FUZZ)
    @given(st.one_of(mutated_scenes().map(json.dumps), st.text(max_size=200),
                     st.builds(lambda s, k: s[:k], mutated_scenes().map(json.dumps), st.integers(0, 400))))
    def run(text): parse(text)
    run()


def test_scene_fuzz_fast():
    fuzz_scene_dicts(FAST); fuzz_scene_texts(FAST)


@pytest.mark.slow
def test_scene_fuzz_thousands():
    fuzz_scene_dicts(SLOW); fuzz_scene_texts(SLOW)


@pytest.mark.parametrize("text", [
    '{"duration": 1' + "0" * 400 + ', "sources": []}',  # a 400-digit duration (float overflow)
    '{"duration": 1' + "0" * 5000 + ', "sources": []}',  # past Python's int-string limit
    "[" * 100_000 + "]" * 100_000,  # nesting deeper than the recursion limit
    '{"duration": 4, "sources": [{"id": "a", "kind": "sfx", "caption": "x", "start": 0, "end": 1' + "0" * 400 + '}]}',
    '{"duration": 4, "sources": [{"id": ' + "[" * 50 + "]" * 50 + ', "kind": "sfx", "caption": "x", "start": 0, "end": 1}]}',
    '{"duration": 4, "sources": [{"id": "a", "kind": "speech", "speaker": "x", "text": "' + "a" * 100_000 + '", "start": 0, "end": 1}]}',
    b'{"duration": 4, "sources": [\xff]}', "", "null", '{"duration": NaN, "sources": []}',
])
def test_scene_hostile_inputs_are_scene_errors(text):
    with pytest.raises(SceneError) as e: Scene.from_json(text)
    assert len(str(e.value)) < 2000


def test_scene_errors_name_a_field():
    with pytest.raises(SceneError, match=r"^scene\.sources: must contain Source objects"): Scene((1, 2), 4)
    with pytest.raises(SceneError, match=r"^scene: must be JSON text"): Scene.from_json(123)
    with pytest.raises(SceneError, match="text: must be at most 2000 characters"):
        Source("s", "speech", 0, 1, speaker="x", text="word " * 1000)


# ---- run folders and checkpoints ----
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

import audiochat.runs.checkpoints as CT
import audiochat.training.streams as ST
import audiochat.training.train as T
from audiochat.cli import main as cli
from audiochat.core.checkpointing import RunFolderError
from audiochat.runs.config import ConfigError, resolve
from audiochat.training.run_data import prepare_data

SMALL = ["--model.d_model=32", "--model.n_layers=2", "--model.n_gen_layers=1", "--model.n_heads=2", "--model.n_kv_heads=1",
         "--data.synthetic_dialogues=24", "--data.eval_dialogues=2", "--data.batch_size=2", "--data.max_frames=12",
         "--data.max_turns=2", "--data.window=8", "--run.progress=false", "--run.eval_every=0", "--run.log_every=1"]


def small(out, *extra):
    return resolve("tiny", overrides=SMALL + [f"--run.out={out}", *extra])


@pytest.fixture(scope="module")
def run2(tmp_path_factory):
    "A finished 2-step run (EMA on), shared by the read-only checks below."
    out = tmp_path_factory.mktemp("run") / "run"
    T.train(small(out, "--optim.steps=2", "--run.save_every=1", "--run.ema=0.5"))
    return out


def test_new_run_into_a_used_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    T.train(small(out, "--optim.steps=3", "--run.save_every=1", "--run.keep=2"))
    before = sorted(p.name for p in (out / "checkpoints").iterdir())
    with pytest.raises(RunFolderError, match="already holds a run.*--resume"):
        T.train(small(out, "--optim.steps=2", "--run.save_every=1"))
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == before  # nothing of the old run touched
    assert cli(["train", *SMALL, f"--run.out={out}", "--optim.steps=2"]) == 1
    assert "already holds a run" in capsys.readouterr().err
    state = T.train(small(out, "--optim.steps=2", "--run.save_every=1"), overwrite=True)  # explicit: the old run goes
    assert Path(state["last_checkpoint"]).is_dir() and T.latest_checkpoint(out).name == "step-0000002"
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-0000001", "step-0000002"]


def test_latest_pointer_stays_in_the_run_folder(run2, tmp_path):
    out = tmp_path / "copy"
    import shutil
    shutil.copytree(run2, out)
    outside = tmp_path / "elsewhere" / "step-0000009"; shutil.copytree(T.latest_checkpoint(run2), outside)
    for target in ["../../elsewhere/step-0000009", str(outside), "step-0000002/../../../elsewhere/step-0000009"]:
        (out / "checkpoints" / "latest").write_text(target + "\n")
        with pytest.raises(RunFolderError, match="must name a step-NNNNNNN folder"): T.latest_checkpoint(out)


def corrupt(ck: Path, how: str):
    m = ck / "model.safetensors"
    if how == "truncated": m.write_bytes(m.read_bytes()[: m.stat().st_size // 2])
    elif how == "empty": m.write_bytes(b"")
    elif how == "garbage": m.write_bytes(os.urandom(4096))
    elif how == "nan":
        w = load_file(str(m)); k = sorted(w)[0]; w[k] = w[k].clone().fill_(float("nan")); save_file(w, str(m))
    elif how == "config.json mismatch":
        c = json.loads((ck / "config.json").read_text()); c["d_model"] = 48; (ck / "config.json").write_text(json.dumps(c))
    elif how == "config.json garbage": (ck / "config.json").write_text("{not json")
    elif how == "config.yaml unknown key": (ck / "config.yaml").write_text((ck / "config.yaml").read_text() + "extra: 1\n")
    elif how == "config.yaml wrong type": (ck / "config.yaml").write_text((ck / "config.yaml").read_text().replace("  lr: ", "  lr: fast #"))
    elif how == "config.yaml bad syntax": (ck / "config.yaml").write_text("optim: [1, 2\n")
    elif how == "trainer_state garbage": (ck / "trainer_state.json").write_text("]")
    elif how == "config.yaml empty": (ck / "config.yaml").write_text("")  # once read as the defaults
    else: raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated", "empty", "garbage", "nan", "config.json mismatch", "config.json garbage",
                                 "config.yaml unknown key", "config.yaml wrong type", "config.yaml bad syntax", "trainer_state garbage",
                                 "config.yaml empty"])
def test_bad_checkpoint_files_are_named_errors(run2, tmp_path, how, capsys):
    import shutil
    out = tmp_path / "run"; shutil.copytree(run2, out)
    ck = T.latest_checkpoint(out); corrupt(ck, how)
    model_file = how.startswith(("truncated", "empty", "garbage", "nan", "config.json"))
    if model_file:
        with pytest.raises(RunFolderError) as e: CT.load_run_model(ck)
        assert str(ck) in str(e.value)
    if how.startswith("config.json"): return  # the chat engine's file (training reads config.yaml)
    with pytest.raises((RunFolderError, ConfigError)) as e: T.train(small(out), resume=True)
    assert str(ck) in str(e.value)
    assert cli(["train", "--resume", f"--run.out={out}"]) == 1  # one line, no traceback
    err = capsys.readouterr().err
    assert err.startswith("audiochat train: error:") and "Traceback" not in err


def test_unwritable_run_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunFolderError, match="cannot write to the run folder"): T.train(small(tmp_path / "file" / "run"))
    if os.geteuid() != 0:  # root writes anywhere
        ro = tmp_path / "ro"; ro.mkdir(); ro.chmod(0o500)
        try:
            with pytest.raises(RunFolderError, match="cannot write"): T.train(small(ro / "run"))
        finally: ro.chmod(0o700)
    assert cli(["train", *SMALL, f"--run.out={tmp_path / 'file' / 'run'}"]) == 1
    assert "cannot write to the run folder" in capsys.readouterr().err


@pytest.mark.parametrize("arg", ["--optim.lr=-1", "--run.ema=2", "--model.d_model=0", "--run.out=", "--optim.betas=[0.9, 1]",
                                 "--run.log_every=0", "--loss.cfg_p=1.5", "--codec.sample_rate=1",
                                 "--optim.betas=[0.9]", "--run.device=quantum", "--optim.steps=0"])
def test_config_values_out_of_range(arg, capsys):
    with pytest.raises(ConfigError): resolve("tiny", overrides=[arg])
    assert cli(["train", arg, "--show-config"]) == 1
    assert "error:" in capsys.readouterr().err


def test_bad_config_file_is_one_line(tmp_path, capsys):
    for text in ("optim: [1, 2\n", "optim:\n  lr: fast\n", "optimizer:\n  lr: 1\n", "- a list\n", "\x00\x01"):
        f = tmp_path / "c.yaml"; f.write_text(text)
        with pytest.raises(ConfigError, match="c.yaml"): resolve("tiny", f)
        assert cli(["train", "--config", str(f), "--show-config"]) == 1
        err = capsys.readouterr().err
        assert "c.yaml" in err and "Traceback" not in err


def test_resume_refuses_a_changed_setting(run2, tmp_path, capsys):
    import shutil
    out = tmp_path / "run"; shutil.copytree(run2, out)
    assert cli(["train", "--resume", f"--run.out={out}", "--optim.steps=8"]) == 1
    assert "optim.steps = 8 was asked (the run has 2)" in capsys.readouterr().err
    c = T.resume_config(small(out, "--optim.steps=2"), {"run": {"out": str(out), "progress": False}})
    assert c.optim.steps == 2 and c.run.out == str(out)


def test_resume_restores_the_random_state_after_the_codec(tmp_path):
    "With a codec folder (the preview codec draws from the global generator when built) a resumed run's saved random state is the uninterrupted run's."
    from audiochat.codec.codecs import make_codec
    torch.manual_seed(0); make_codec(resolve("tiny").codec).save_pretrained(tmp_path / "codec")
    extra = ["--optim.steps=4", "--run.save_every=2", f"--data.codec={tmp_path / 'codec'}"]
    T.train(small(tmp_path / "once", *extra))
    T.train(small(tmp_path / "twice", *extra), until=2)
    T.train(small(tmp_path / "twice"), resume=True)
    a, b = (load_file(str(T.latest_checkpoint(tmp_path / n) / "trainer.safetensors")) for n in ("once", "twice"))
    assert torch.equal(a["rng.torch"], b["rng.torch"])


def test_ema_weights_are_loaded_for_sampling(run2):
    ck = T.latest_checkpoint(run2)
    ema, raw = load_file(str(ck / "ema.safetensors")), load_file(str(ck / "model.safetensors"))
    m, r = CT.load_run_model(ck), CT.load_run_model(ck, ema=False)
    assert m.weights == "ema" and r.weights == "raw"
    k = "diffusion_head.weight"
    assert not torch.equal(ema[k], raw[k])
    assert torch.equal(dict(m.named_parameters())[k].detach(), ema[k]) and torch.equal(dict(r.named_parameters())[k].detach(), raw[k])


# ---- dataset builds: nothing half-written counts ----
import signal
import time

import audiochat.sim.data as D

ONE = D.DataConfig(dialogues=2, shard_size=1, edits=1, max_duration=5.0, mistake_rate=0.0)


def readable(out):
    return sum(1 for _ in D.read_records(out))


def test_stale_worker_cannot_commit(tmp_path):
    (tmp_path / ".build-id").write_text("new\n")
    assert D.build_shard(tmp_path, ONE, 0, build_id="old") is None  # another build started since
    assert not (tmp_path / "shard-00000").exists() and not list(tmp_path.glob(".tmp-*"))
    real = D.simulate_dialogue
    def cleaned_up_under_us(*a, **k):  # a new build deletes the worker's temporary folder while it works
        d = real(*a, **k)
        for t in tmp_path.glob(".tmp-shard-*"): shutil.rmtree(t)
        return d
    D.simulate_dialogue = cleaned_up_under_us
    try: assert D.build_shard(tmp_path, ONE, 0, build_id="new") is None
    finally: D.simulate_dialogue = real
    assert not (tmp_path / "shard-00000").exists()


def test_half_written_shard_is_not_counted_and_is_rebuilt(tmp_path):
    D.build(tmp_path, ONE, workers=1, progress=False)
    broken = tmp_path / "shard-00001"
    (broken / "records.jsonl").unlink()  # audio and stats, no records: what a stale worker used to leave
    assert not D.shard_done(broken) and D.summarize_build(tmp_path)["dialogues"] == readable(tmp_path)
    s = D.build(tmp_path, ONE, workers=1, progress=False)
    assert D.shard_done(broken) and s["dialogues"] == readable(tmp_path) == D.summarize_build(tmp_path)["dialogues"]


def _children(pid):
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid: out.append(int(p.name))
            except (OSError, IndexError, ValueError): pass
    return out


@pytest.mark.slow
def test_kill_only_the_main_process_then_rebuild(tmp_path):
    "A parallel build whose main process is killed (workers live on) and rerun at once: every counted dialogue can be read."
    out = tmp_path / "data"
    cmd = [sys.executable, "-c", "import sys; from audiochat.cli import main; sys.exit(main(sys.argv[1:]))", "data", "build", "--out", str(out), "--workers", "2", "--dialogues", "12",
           "--shard-size", "2", "--edits", "1", "--max-duration", "5"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    main = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not any(out.glob(".tmp-shard-*/audio/*.flac")): time.sleep(0.05)
    workers = _children(main.pid)
    main.send_signal(signal.SIGKILL); main.wait()  # only the main process: its workers go on with their shards
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=600).returncode == 0
    for w in workers:  # let the stale workers finish (or fail to commit) before looking
        while Path(f"/proc/{w}").exists() and time.time() < deadline + 120: time.sleep(0.1)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dialogues"] == readable(out) == D.summarize_build(out)["dialogues"]
    for shard in sorted(out.glob("shard-*")):
        assert D.shard_done(shard), f"{shard.name} is not a complete shard: {sorted(p.name for p in shard.iterdir())}"


# ---- audio files ----
import numpy as np
import soundfile as sf

from audiochat.core.audio import MAX_AUDIO_SECONDS, AudioError, load_audio


def wav_with_rate(path, rate, seconds=0.1):
    "A valid PCM WAV whose header claims `rate` Hz."
    sf.write(str(path), np.zeros(max(1, int(rate * seconds)), dtype="float32"), rate, subtype="PCM_16")
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_bytes(b""), "not a supported audio format"),
    (lambda p: p.write_bytes(os.urandom(2000)), "not a supported audio format"),
    (lambda p: p.write_bytes(open(wav_with_rate(p, 16000, 1.0), "rb").read()[:30]), "not a supported audio format"),
    (lambda p: wav_with_rate(p, 16000, 0.0001) and sf.write(str(p), np.zeros((0, 1), "float32"), 16000), "empty"),
    (lambda p: sf.write(str(p), np.full(1600, 300.0, "float32"), 16000, subtype="FLOAT"), "300x full scale"),
    (lambda p: sf.write(str(p), np.full(1600, np.nan, "float32"), 16000, subtype="FLOAT"), "NaN/inf"),
    (lambda p: sf.write(str(p), np.zeros(4, "float32"), 1, subtype="PCM_16"), "says 1 Hz"),
    (lambda p: sf.write(str(p), np.zeros((int(16000 * 0.01), 16), "float32"), 16000), "16 channels"),
])
def test_bad_audio_files(tmp_path, make, message):
    p = tmp_path / "bad.wav"; make(p)
    with pytest.raises(AudioError, match=message) as e: load_audio(p)
    assert str(p) in str(e.value)


def test_audio_length_is_checked_before_decoding(tmp_path):
    p = tmp_path / "long.wav"
    with sf.SoundFile(str(p), "w", 8000, 1, "PCM_16") as f:  # 11 minutes written in blocks (a 10 MB file)
        for _ in range(66): f.write(np.zeros(80000, "int16"))
    import tracemalloc
    tracemalloc.start()
    with pytest.raises(AudioError, match="at most 600 s"): load_audio(p)
    assert tracemalloc.get_traced_memory()[1] < 5_000_000  # nothing decoded
    tracemalloc.stop()
    with pytest.raises(AudioError, match="at most 30 s"): load_audio(wav_with_rate(tmp_path / "a.wav", 8000, 31), max_seconds=30)
    assert MAX_AUDIO_SECONDS == 600


def test_odd_sample_rate_resamples_in_little_memory(tmp_path):
    import resource
    p = wav_with_rate(tmp_path / "odd.wav", 12007, 2.0)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    x = load_audio(p)
    assert abs(x.shape[-1] - 32000) <= 4
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 500_000  # KB: well under the 3.7 GB of the exact filter bank


# ---- tools: text limits ----
import audiochat.core.audio as core_audio
import audiochat.sim.tools as tools
from audiochat.sim import sounds, speech


def test_tts_text_limits_and_control_characters(monkeypatch):
    with pytest.raises(sounds.ToolError, match="at most 2000 characters"): speech.clean_text("word " * 20_000)
    assert speech.clean_text("one\x00two three") == "one two three"
    box = tools.Toolbox()
    assert "at most 2000 characters" in box.call("text_to_speech", {"text": "a " * 50_000, "speaker": "narrator"})["error"]
    if shutil.which("espeak-ng"):
        full, cut = speech.speak("hello there my old friend"), speech.speak("hello there\x00 my old friend")
        assert abs(full.shape[-1] - cut.shape[-1]) < 0.1 * full.shape[-1]  # the NUL no longer ends the text
        speech._speak_cached.cache_clear()
        monkeypatch.setattr(speech, "ESPEAK_TIMEOUT", 1e-4)
        with pytest.raises(sounds.ToolError, match="espeak-ng took more than"): speech.speak("a slow line")
        assert "espeak-ng took more than" in box.call("text_to_speech", {"text": "another line", "speaker": "narrator"})["error"]


def test_speech_cache_is_bounded_by_audio_length(monkeypatch):
    import torch
    speech._speak_cached.cache_clear()
    monkeypatch.setattr(speech, "_speak_uncached", lambda program, text, args: torch.zeros(1, 60 * core_audio.SAMPLE_RATE))
    for i in range(40): speech._speak_cached("p", f"text {i}", ())
    assert sum(v.shape[-1] for v in speech._speech_cache.values()) <= speech.SPEECH_CACHE_SECONDS * core_audio.SAMPLE_RATE
    speech._speak_cached.cache_clear()


# ---- the tool loop against a misbehaving OpenAI-compatible server ----
import http.server
import threading

from audiochat.sim.agents import MAX_TOOL_CALLS, AgentError, FunctionTools, OpenAILLM, run_agent


def completion(message):
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


def call(name, arguments, id="t1"):
    return {"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}


MISBEHAVIOURS = {
    "empty choices": (200, {"id": "c", "object": "chat.completion", "created": 0, "model": "m", "choices": []}),
    "no choices key": (200, {"id": "c"}),
    "not JSON": (200, b"<html>gateway</html>"),
    "not JSON, text/html": (200, ("text/html", b"<html>oops</html>")),
    "JSON list": (200, [1, 2, 3]),
    "server error": (500, {"error": {"message": "boom"}}),
    "rate limited": (429, {"error": {"message": "slow down"}}),
    "null message": (200, completion(None)),
    "content is a number": (200, completion({"role": "assistant", "content": 5})),
    "arguments a number": (200, completion({"role": "assistant", "content": None, "tool_calls": [call("music", 5)]})),
    "no function name": (200, completion({"role": "assistant", "content": None, "tool_calls": [{"id": "t", "type": "function", "function": {}}]})),
    "deeply nested arguments": (200, completion({"role": "assistant", "content": None, "tool_calls": [call("music", "[" * 100_000 + "]" * 100_000)]})),
    "arguments not JSON": (200, completion({"role": "assistant", "content": None, "tool_calls": [call("music", "{seconds: 120")]})),
    "unknown tool": (200, completion({"role": "assistant", "content": None, "tool_calls": [call("rm_rf", "{}")]})),
    "fifty music calls": (200, completion({"role": "assistant", "content": None,
                                           "tool_calls": [call("music", '{"seconds": 120}', f"t{i}") for i in range(50)]})),
    "too slow": (200, "sleep"),
    "body nested 100,000 deep": (200, b"[" * 100_000 + b"]" * 100_000),
}


class FakeServer(http.server.BaseHTTPRequestHandler):
    mode = "empty choices"
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, body = MISBEHAVIOURS[FakeServer.mode]
        if body == "sleep": time.sleep(2); status, body = 200, completion({"role": "assistant", "content": "late"})
        ctype = "application/json"
        if isinstance(body, tuple): ctype, body = body
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status); self.send_header("Content-Type", ctype); self.send_header("Content-Length", str(len(data)))
        self.end_headers(); self.wfile.write(data)


@pytest.fixture(scope="module")
def fake_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.mark.parametrize("mode", list(MISBEHAVIOURS))
def test_tool_loop_against_a_misbehaving_server(fake_server, mode):
    FakeServer.mode = mode
    ran = []
    box = FunctionTools()
    def music(seconds: float): ran.append(seconds); return {"ok": True}
    box.add(music, {"type": "object", "properties": {"seconds": {"type": "number"}}, "required": ["seconds"]})
    llm = OpenAILLM("m", base_url=fake_server, timeout=0.5)
    llm.client = llm.client.with_options(max_retries=0)
    try: messages = run_agent(llm, [{"role": "user", "content": "hi"}], box, max_steps=2)
    except AgentError as e: assert str(e)
    else: assert messages[-1]["role"] == "assistant"
    assert len(ran) <= MAX_TOOL_CALLS * 2  # at most MAX_TOOL_CALLS per reply, over 2 replies


# ---- the chat engine samples with the EMA weights; its inputs are checked before any work ----
@pytest.fixture(scope="module")
def engine_parts(run2, tmp_path_factory):
    import inspect

    from audiochat.serve.chat import ChatEngine
    if "ema" not in inspect.signature(ChatEngine.load).parameters:
        pytest.skip("the chat engine does not load the EMA weights yet (ChatEngine.load(ema=...))")
    from audiochat.codec.codecs import make_codec
    codec = tmp_path_factory.mktemp("codec") / "codec"
    torch.manual_seed(0); make_codec(resolve("tiny").codec).save_pretrained(codec)
    return run2, codec


def test_chat_engine_uses_the_ema_weights(engine_parts):
    from audiochat.serve.chat import ChatEngine
    run, codec = engine_parts
    ema = load_file(str(T.latest_checkpoint(run) / "ema.safetensors"))
    e, r = ChatEngine.load(run, codec), ChatEngine.load(run, codec, ema=False)
    k = "diffusion_head.weight"
    assert e.model.weights == "ema" and torch.equal(dict(e.model.named_parameters())[k].detach(), ema[k])
    assert r.model.weights == "raw" and not torch.equal(dict(r.model.named_parameters())[k].detach(), ema[k])


def test_chat_inputs_checked_before_generation(engine_parts, tmp_path, capsys):
    from audiochat.serve.chat import ChatEngine
    from audiochat.serve.replies import MAX_REQUEST_CHARS
    run, codec = engine_parts
    e = ChatEngine.load(run, codec)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="at most 2000"): e.tell("a story " * 20_000)
    with pytest.raises(ValueError, match="at most 2000"): e.edit("louder " * 20_000, torch.zeros(2, 16000), 16000)
    assert time.perf_counter() - t0 < 5 and MAX_REQUEST_CHARS == 2000
    with pytest.raises(ValueError, match="retries >= 0"): ChatEngine.load(run, codec, retries=-1)
    assert cli(["tell", "a story", "--run", str(run), "--codec", str(codec), "--retries", "-1"]) == 1
    assert "--retries -1: give 0 to 10" in capsys.readouterr().err
    sf.write(str(tmp_path / "in.wav"), np.zeros(8000, "float32"), 16000)
    assert cli(["edit", str(tmp_path / "in.wav"), "louder", "-o", str(tmp_path / "out"), "--run", str(run), "--codec", str(codec)]) == 1
    assert "give an audio file name" in capsys.readouterr().err and not list(tmp_path.glob("out*"))


def test_local_codec_path_never_goes_to_the_network(monkeypatch, tmp_path):
    import huggingface_hub

    from audiochat.codec.codecs import Codec
    def no_network(*a, **k): raise AssertionError("a local path must not be looked up on the Hub")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    monkeypatch.chdir(tmp_path); (tmp_path / "runs").mkdir()  # a bare ORG/NAME is a Hub id, unless ORG/ is a local folder
    for path in ["runs/codec", "./missing/codec", str(tmp_path / "org" / "name")]:
        with pytest.raises(FileNotFoundError, match="codec folder not found"): Codec.from_pretrained(path)


# ---- an OpenAI-compatible server that sends a gzip bomb, drips its body, or asks to wait: bounded by the client ----
import gzip
import resource

from audiochat.sim.agents import MAX_RESPONSE_BYTES


def _peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class HostileServer(http.server.BaseHTTPRequestHandler):
    mode, calls = "gzip", 0
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        HostileServer.calls += 1
        if HostileServer.mode == "retry after 50":
            body = b'{"error": {"message": "slow down"}}'
            self.send_response(429); self.send_header("Retry-After", "50"); self.send_header("Content-Length", str(len(body)))
            self.end_headers(); self.wfile.write(body); return
        if HostileServer.mode == "gzip":  # 1 MB on the wire, 1 GB of spaces once decompressed
            body = GZIP_BOMB
            self.send_response(200); self.send_header("Content-Type", "application/json"); self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body); return
        body = json.dumps(completion({"role": "assistant", "content": "x" * 200})).encode()  # drip: one byte every 0.2 s
        self.send_response(200); self.send_header("Content-Type", "application/json"); self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for b in body: self.wfile.write(bytes([b])); self.wfile.flush(); time.sleep(0.2)
        except OSError: pass


def _gzip_bomb(mb=1024):
    import io
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9) as f:
        f.write(b'{"choices": ['); block = b" " * (1 << 20)
        for _ in range(mb): f.write(block)
    return buf.getvalue()


GZIP_BOMB = None


@pytest.fixture(scope="module")
def hostile_server():
    global GZIP_BOMB
    GZIP_BOMB = _gzip_bomb()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HostileServer)
    server.daemon_threads = True
    server.handle_error = lambda request, address: None  # the client hanging up mid-body is expected here
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


@pytest.mark.parametrize("mode, timeout, message", [
    ("gzip", 30, "over 4,000,000 bytes"), ("drip", 1.0, "deadline"), ("retry after 50", 2.0, "would pass the 2 s deadline")])
def test_llm_calls_are_bounded_in_bytes_and_time(hostile_server, mode, timeout, message):
    HostileServer.mode, HostileServer.calls = mode, 0
    llm = OpenAILLM("m", base_url=hostile_server, timeout=timeout)
    before, t0 = _peak_rss_mb(), time.perf_counter()
    with pytest.raises(AgentError, match=message): llm.chat([{"role": "user", "content": "hi"}])
    seconds, grown = time.perf_counter() - t0, _peak_rss_mb() - before
    print(f"{mode}: {seconds:.2f} s, peak RSS grew {grown:.0f} MB")
    assert seconds < timeout + 1 and grown < 200 and MAX_RESPONSE_BYTES == 4_000_000
    assert HostileServer.calls == 1  # no retry that could not finish in time


# ---- limits decided from headers and sizes, before the work ----
from audiochat.core.audio import MAX_DECODED_SAMPLES
from audiochat.core.scene import MAX_SCENE_CHARS, MAX_SOURCES


def hostile_flac(path, seconds=60, rate=384_000, channels=8):
    "A FLAC of 0.1 s whose header (STREAMINFO) says `seconds` at `rate` Hz with `channels`: what a reader sees before decoding."
    sf.write(str(path), np.zeros((rate // 10, channels), "float32"), rate, subtype="PCM_16")
    b = bytearray(path.read_bytes())
    field = int.from_bytes(b[18:26], "big")  # 'fLaC', a block header, then 10 bytes before rate/channels/bits/total samples
    b[18:26] = ((field & ~((1 << 36) - 1)) | seconds * rate).to_bytes(8, "big")
    path.write_bytes(b)
    assert sf.info(str(path)).duration == seconds
    return path


def measured(fn):
    "(what fn raised, seconds, MB that the peak of Python allocations reached): one hostile input's cost."
    import tracemalloc
    tracemalloc.start(); t0 = time.perf_counter()
    try: fn(); err = None
    except Exception as e: err = e
    seconds, peak = time.perf_counter() - t0, tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return err, seconds, peak


def test_hostile_flac_is_refused_from_its_header(tmp_path):
    p = hostile_flac(tmp_path / "hostile.flac")  # 60 s x 384 kHz x 8 channels: 3.3 GB once decoded
    err, seconds, mb = measured(lambda: load_audio(p))
    assert isinstance(err, AudioError) and str(p) in str(err) and "MAX_DECODED_SAMPLES" in str(err)
    err30, _, _ = measured(lambda: load_audio(p, max_seconds=30))
    assert isinstance(err30, AudioError) and "at most 30 s" in str(err30)
    print(f"hostile FLAC refused in {seconds * 1000:.1f} ms, {mb:.2f} MB allocated")
    assert seconds < 1 and mb < 5 and MAX_DECODED_SAMPLES == 28_800_000


def test_engine_reads_audio_with_its_own_limit(engine_parts, tmp_path):
    "understand/edit of a file: the engine's max_seconds (30 s) is checked from the header, before decoding."
    from audiochat.serve.chat import ChatEngine
    run, codec = engine_parts
    e = ChatEngine.load(run, codec)
    p = hostile_flac(tmp_path / "long.flac", seconds=40, rate=16000, channels=2)  # under every file limit, over the engine's
    err, seconds, mb = measured(lambda: e.encode(p))
    assert isinstance(err, AudioError) and str(p) in str(err) and "at most 30 s" in str(err)
    assert seconds < 1 and mb < 5


def test_pipe_is_not_read(tmp_path):
    fifo = tmp_path / "pipe.wav"; os.mkfifo(fifo)
    err, seconds, _ = measured(lambda: load_audio(fifo))
    assert isinstance(err, AudioError) and "not a regular file" in str(err) and seconds < 1


def test_many_source_scene_is_refused_at_once():
    rain = VALID["sources"][1]
    text = json.dumps({"duration": 8, "sources": [dict(rain, id=f"r{i}") for i in range(3000)]})  # 250 KB, once 22.8 GB to render
    err, seconds, mb = measured(lambda: Scene.from_json(text))
    assert isinstance(err, SceneError) and err.field == "scene.sources" and f"at most {MAX_SOURCES}" in str(err)
    print(f"3,000-source scene refused in {seconds * 1000:.0f} ms, {mb:.1f} MB allocated")
    assert seconds < 1 and mb < 50
    short = {"kind": "sfx", "caption": "rain", "start": 0, "end": 8}
    assert len(Scene.from_json(json.dumps({"duration": 8, "sources": [dict(short, id=f"r{i}") for i in range(MAX_SOURCES)]})).sources) == MAX_SOURCES
    wordy = json.dumps({"duration": 8, "sources": [dict(VALID["sources"][0], id=f"s{i}", text="word " * 390) for i in range(20)]})
    err, seconds, _ = measured(lambda: Scene.from_json(wordy))  # 20 sources of 2,000 characters: each text allowed, not the scene
    assert isinstance(err, SceneError) and f"at most {MAX_SCENE_CHARS} characters" in str(err) and seconds < 1


@pytest.mark.slow
def test_largest_scene_renders_in_bounded_time_and_memory(engine_parts):
    "A scene as long as a scene can be (MAX_SCENE_CHARS) renders with the tiny model and the default 25 steps in bounded time and memory."
    from audiochat.serve.chat import ChatEngine
    run, codec = engine_parts
    e = ChatEngine.load(run, codec)
    srcs = [dict(id=f"s{i}", kind="speech", speaker="narrator", text="word " * 130, start=0, end=8) for i in range(5)]
    scene = Scene.from_dict({"duration": 8, "sources": srcs})
    assert len(scene.to_json()) > 0.8 * MAX_SCENE_CHARS
    from audiochat.model.forcing import Turn
    before, t0 = _peak_rss_mb(), time.perf_counter()
    z, audio = e.render([Turn("user", "a story")], scene, scene.to_json())
    seconds, grown = time.perf_counter() - t0, _peak_rss_mb() - before
    print(f"a scene of {len(scene.to_json())} characters rendered in {seconds:.1f} s, peak RSS grew {grown:.0f} MB")
    assert audio.shape[-1] > 0 and seconds < 120 and grown < 1024


def test_upload_size_is_limited(tmp_path):
    from audiochat.serve.app import MAX_UPLOAD_MB, checked_upload
    big = tmp_path / "big.wav"
    with open(big, "wb") as f: f.truncate(MAX_UPLOAD_MB * 2**20 + 1)  # sparse: no disk used
    with pytest.raises(ValueError, match=f"at most {MAX_UPLOAD_MB} MB"): checked_upload(big)
    assert checked_upload(wav_with_rate(tmp_path / "small.wav", 16000)) == str(tmp_path / "small.wav")


def test_page_errors_show_no_server_paths():
    from audiochat.serve.app import one_line
    line = one_line(AudioError("cannot read /tmp/gradio/0a1b2c/rain.wav: not a supported audio format"))
    assert line == "cannot read rain.wav: not a supported audio format"
    assert one_line(ValueError("caption \ud800")).encode("utf-8")  # a lone surrogate reaches the page as '?'


def test_lone_surrogate_and_newline_ids():
    with pytest.raises(SceneError, match="must be valid Unicode text"):
        Scene.from_dict({"duration": 4, "sources": [{"id": "a", "kind": "sfx", "caption": "rain \ud800", "start": 0, "end": 1}]})
    with pytest.raises(SceneError, match="id: must be 1-32"):
        Scene.from_dict({"duration": 4, "sources": [{"id": "s1\n", "kind": "sfx", "caption": "rain", "start": 0, "end": 1}]})
    from audiochat.serve.replies import checked_request
    with pytest.raises(ValueError, match="not valid Unicode"): checked_request("a story \ud800")


def test_numbers_that_would_mean_no_work_or_endless_work(capsys, tmp_path):
    from audiochat.codec.codecs import codec_preset
    from audiochat.codec.training import train_codec
    with pytest.raises(ValueError, match="minutes > 0"): train_codec(codec_preset("tiny"), str(tmp_path), tmp_path / "c", minutes=-1)
    assert cli(["codec", "train", "--data", str(tmp_path), "--minutes", "-1", "--out", str(tmp_path / "c")]) == 1
    assert "minutes > 0" in capsys.readouterr().err and not (tmp_path / "c").exists()
    assert cli(["tell", "a story", "--run", str(tmp_path / "none"), "--retries", "1000000"]) == 1  # before the run is even looked for
    assert "--retries 1000000: give 0 to 10" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e: cli(["serve", "--run", str(tmp_path / "none"), "--port", "99999"])
    assert e.value.code == 2 and "give a TCP port from 1 to 65535" in capsys.readouterr().err


def test_unwritable_outputs_are_refused_before_the_work(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    under_a_file = tmp_path / "file" / "out"
    assert cli(["tell", "a story", "--run", str(tmp_path / "none"), "-o", str(under_a_file / "story.wav")]) == 1
    assert "cannot write to" in capsys.readouterr().err
    assert cli(["data", "build", "--out", str(under_a_file), "--dialogues", "1", "--workers", "1"]) == 1
    assert "cannot write to" in capsys.readouterr().err
    assert cli(["data", "export", "--data", str(D.DATA_SAMPLES / "dialogues"), "--out", str(under_a_file / "hf")]) == 1
    assert "cannot write to" in capsys.readouterr().err
    wav = wav_with_rate(tmp_path / "in.wav", 16000)
    assert cli(["understand", str(wav), "--run", str(tmp_path / "none"), "-o", str(under_a_file / "u.json")]) == 1
    assert "cannot write to" in capsys.readouterr().err
    assert cli(["chat", "--run", str(tmp_path / "none"), "--out", str(under_a_file)]) == 1
    assert "cannot write to" in capsys.readouterr().err


def test_non_utf8_file_name_is_one_line(tmp_path, capsys):
    name = os.fsdecode(str(tmp_path).encode() + b"/\xff\xfe.wav")
    assert cli(["understand", name, "--run", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err


# ---- containment: a path read from a record, an index or a pointer stays in its folder ----
def _record_pointing_outside(tmp_path):
    data = tmp_path / "data"; shutil.copytree(D.DATA_SAMPLES / "dialogues", data)
    rec = data / "shard-00000" / "records.jsonl"
    lines = rec.read_text().splitlines()
    r = json.loads(lines[0]); r["turns"][1]["audio"] = "../" * 20 + "etc/hostname"
    rec.write_text("\n".join([json.dumps(r)] + lines[1:]) + "\n")
    return data


def test_record_audio_path_cannot_leave_its_shard(tmp_path, capsys):
    pytest.importorskip("datasets")
    data = _record_pointing_outside(tmp_path)
    assert cli(["data", "export", "--data", str(data), "--out", str(tmp_path / "hf")]) == 1
    err = capsys.readouterr().err
    assert "records.jsonl line 1: turns[1].audio: '../../" in err and "points outside" in err and not (tmp_path / "hf").exists()
    src = ST.DialogueSource(str(data), 8)  # training reads the same records
    with pytest.raises(ValueError, match="turns\\[1\\].audio: '../../.*points outside"): src.record(0)


def test_safetensors_index_cannot_leave_its_folder(tmp_path):
    from audiochat.model.transformer import load_safetensors_dir
    ck = tmp_path / "ck"; ck.mkdir()
    save_file({"w": torch.zeros(1)}, str(tmp_path / "secret.safetensors"))
    (ck / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../secret.safetensors"}}))
    with pytest.raises(ValueError, match="weight_map: '../secret.safetensors' points outside"): load_safetensors_dir(ck)
    (ck / "model.safetensors.index.json").write_text("[1]")
    with pytest.raises(ValueError, match="is not a safetensors index"): load_safetensors_dir(ck)


def test_damaged_bundle_files_are_named_errors(engine_parts, tmp_path):
    "latent_stats.safetensors damaged three ways and a bundle.json holding [1]: one line naming the file, when the engine loads."
    from audiochat.serve.chat import ChatEngine
    run, codec = engine_parts
    bundle = ChatEngine.load(run, codec).save_pretrained(tmp_path / "bundle")
    stats = bundle / "latent_stats.safetensors"
    for damage, says in [(lambda: stats.write_bytes(os.urandom(64)), "latent_stats.safetensors is damaged"),
                         (lambda: save_file({"mean": torch.zeros(3)}, str(stats)), "must hold 'mean' and 'std'"),
                         (lambda: save_file({"mean": torch.zeros(3), "std": torch.ones(3)}, str(stats)), "latent statistics have 3 dims"),
                         (lambda: save_file({"mean": torch.zeros(8), "std": torch.full((8,), float("nan"))}, str(stats)), "not finite")]:
        damage()
        with pytest.raises(ValueError, match=says): ChatEngine.from_pretrained(bundle)
    (bundle / "bundle.json").write_text("[1]")
    with pytest.raises(ValueError, match="bundle.json must hold a JSON object"): ChatEngine.from_pretrained(bundle)


# ---- one writer per run folder; nothing left over is reused unasked ----
TRAIN = [sys.executable, "-c", "import sys; from audiochat.cli import main; sys.exit(main(sys.argv[1:]))", "train", *SMALL]


def test_a_second_training_into_a_folder_in_use_is_refused(tmp_path):
    out = tmp_path / "run"; out.mkdir()
    CT.lock_run_folder(out)  # this process trains into it
    try:
        r = subprocess.run(TRAIN + [f"--run.out={out}", "--optim.steps=1"], capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, OMP_NUM_THREADS="1"))
        assert r.returncode == 1 and f"is in use by pid {os.getpid()}" in r.stderr and not (out / "checkpoints").exists()
    finally: CT.unlock_run_folder(out)


def test_two_trainings_at_once_one_wins(tmp_path):
    "Started together into one folder: one trains, the other is refused; the checkpoints and config.yaml agree."
    out, env = tmp_path / "run", dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen(TRAIN + [f"--run.out={out}", "--optim.steps=2", f"--run.seed={s}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for s in (1, 2)]
    results = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
    assert sorted(rc for rc, _ in results) == [0, 1], results
    assert any("in use by" in err or "already holds a run" in err for rc, err in results if rc == 1)
    winner = T.load_config(out / "config.yaml")
    assert CT.load_checkpoint(T.latest_checkpoint(out))["config"].run.seed == winner.run.seed


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path):
    out = tmp_path / "run"; out.mkdir()
    killed = subprocess.run([sys.executable, "-c", "import os, sys; from audiochat.runs.checkpoints import lock_run_folder; lock_run_folder(sys.argv[1]); os._exit(9)",
                             str(out)], capture_output=True)
    assert killed.returncode == 9 and (out / ".lock").read_text().startswith("pid ")  # what a killed run leaves: the file, no holder
    T.train(small(out, "--optim.steps=1"))
    assert T.latest_checkpoint(out).name == "step-0000001"


def test_leftovers_of_a_killed_run_are_not_reused_for_other_data(tmp_path, capsys):
    out = tmp_path / "run"
    first = small(out, "--optim.steps=1")
    T.open_run(first); prepare_data(first, out); CT.unlock_run_folder(out)  # a run killed before its first checkpoint
    assert (out / "tokenizer").exists() and T.latest_checkpoint(out) is None
    (out / "checkpoints").mkdir(exist_ok=True); (out / "checkpoints" / ".tmp-step-0000001-99999").mkdir()  # a save cut short
    with pytest.raises(RunFolderError, match="holds tokenizer made for other data settings"):
        T.train(small(out, "--optim.steps=1", "--data.synthetic_dialogues=30"))
    assert not list((out / "checkpoints").glob(".tmp-*"))  # cleaned on the next start
    T.train(small(out, "--optim.steps=1"))  # the same data: the tokenizer is its own
    T.train(small(out, "--optim.steps=1", "--data.synthetic_dialogues=30"), overwrite=True)  # asked: made afresh


def test_export_fails_on_a_damaged_shard_unless_asked(tmp_path, capsys):
    pytest.importorskip("datasets")
    data = tmp_path / "data"
    D.build(data, D.DataConfig(dialogues=4, shard_size=2, edits=1, max_duration=5.0, mistake_rate=0.0), workers=1, progress=False)
    (data / "shard-00001" / "stats.json").write_text("{damaged")
    assert cli(["data", "export", "--data", str(data), "--out", str(tmp_path / "hf")]) == 1
    assert "1 damaged shard(s) (shard-00001)" in capsys.readouterr().err and not (tmp_path / "hf").exists()
    assert cli(["data", "export", "--data", str(data), "--out", str(tmp_path / "hf"), "--skip-damaged"]) == 0
    out, err = capsys.readouterr()
    assert "skipped shard-00001 (damaged): 4 turns not exported" in err and "wrote" in out


def test_server_folders_are_removed(tmp_path):
    import tempfile

    from audiochat.serve.app import app_folder
    gone = subprocess.run([sys.executable, "-c", "import os; from audiochat.serve.app import app_folder; f = app_folder(); (f / 'turn.wav').write_text('x'); print(f); os._exit(0)"],
                          capture_output=True, text=True).stdout.strip()
    assert Path(gone).exists()  # killed: no exit handler ran
    mine = app_folder()  # the next server removes what servers that are gone left behind
    assert not Path(gone).exists() and mine.exists() and mine.parent == Path(tempfile.gettempdir())
    shutil.rmtree(mine)


def test_chat_reset_never_overwrites_a_turn(tmp_path, monkeypatch, capsys):
    "A new conversation (/reset), or a new session in the same folder, writes new turn files."
    import io
    import types

    import audiochat.serve.ui as ui
    from audiochat.serve.replies import Reply, Timings

    class Engine:
        codec = types.SimpleNamespace(config=types.SimpleNamespace(sample_rate=16000))
        def __init__(self): self.history, self.replies = [], []
        def reset(self): self.history, self.replies = [], []
        def tell(self, text):
            r = Reply("tell", text, None, "", audio=torch.full((1, 1600), 0.01 * next(told)), timings=Timings())
            self.replies.append(r); return r
    told = iter(range(1, 10))  # the n-th story of the test is at level n/100
    monkeypatch.setattr(ui, "_engine", lambda a: Engine())
    out = tmp_path / "chat"
    assert ui.chat_main(["--run", "unused", "--out", str(out)], io.StringIO("rain\n/reset\nwind\n/quit\n")) == 0
    assert ui.chat_main(["--run", "unused", "--out", str(out)], io.StringIO("fire\n/quit\n")) == 0
    assert sorted(p.name for p in out.glob("turn-*.wav")) == ["turn-01.wav", "turn-02.wav", "turn-03.wav"]
    levels = [float(np.abs(sf.read(str(out / f"turn-0{i}.wav"))[0]).max()) for i in (1, 2, 3)]
    assert levels == pytest.approx([0.01, 0.02, 0.03], abs=1e-3)  # every story kept, in order, none written over


def test_export_of_a_record_without_a_field_is_one_line(tmp_path, capsys):
    pytest.importorskip("datasets")
    data = tmp_path / "data"; shutil.copytree(D.DATA_SAMPLES / "dialogues", data)
    rec = data / "shard-00000" / "records.jsonl"
    lines = rec.read_text().splitlines()
    r = json.loads(lines[2]); del r["turns"][1]["user"]
    rec.write_text("\n".join(lines[:2] + [json.dumps(r)] + lines[3:]) + "\n")
    assert cli(["data", "export", "--data", str(data), "--out", str(tmp_path / "hf")]) == 1  # was a DatasetGenerationError
    err = capsys.readouterr().err
    assert f"dialogue {r['id']!r} turns[1] has no 'user'" in err and err.count("\n") == 1 and not (tmp_path / "hf").exists()


def test_more_than_two_channels_refused_from_the_header_when_stereo_is_asked(tmp_path):
    "3-8 channel files were decoded, then refused without the file's name; now the header decides, naming the file."
    p = hostile_flac(tmp_path / "six.flac", seconds=20, rate=48000, channels=6)  # 0.1 s of samples, a header that says 20 s
    err, seconds, mb = measured(lambda: load_audio(p, channels=2, max_seconds=30))
    assert isinstance(err, AudioError) and f"{p} has 6 channels" in str(err) and seconds < 1 and mb < 5
