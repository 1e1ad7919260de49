"""Speech, sound effects, music, the mixer and the tool-calling Toolbox."""
import io
import json
import math
import shutil
import subprocess

import jsonschema
import numpy as np
import pyloudnorm as pyln
import pytest
import soundfile as sf
import torch
import torchaudio
from hypothesis import given, settings
from hypothesis import strategies as st

from audiochat.core.audio import SAMPLE_RATE, pan_gains
from audiochat.core.scene import Scene, Source
from audiochat.sim import sounds, speech, synth, tools
from audiochat.sim.sounds import (
    EMOTIONS,
    MUSIC_MOODS,
    SOUND_EFFECTS,
    SPEAKERS,
    ToolError,
    UnknownSoundError,
    resolve_sound,
)
from audiochat.sim.speech import EspeakNotFoundError, phonemes, speak
from audiochat.sim.synth import synth_music, synth_sfx
from audiochat.sim.tools import (
    LIMIT_CEILING,
    MAX_SPEEDUP,
    TimingError,
    Toolbox,
    limit_peaks,
    render,
)

SR = SAMPLE_RATE


def scene(*sources, duration=4.0):
    return Scene.from_dict({"duration": duration, "sources": list(sources)})


def lufs(x):
    "Reference loudness straight from pyloudnorm."
    return pyln.Meter(SR, block_size=min(0.4, x.shape[-1] / SR)).integrated_loudness(x.T.double().numpy())


# ---------------------------------------------------------------- speech

def test_presets():
    assert len(SPEAKERS) >= 8 and len(EMOTIONS) >= 4
    assert {"narrator", "old man", "girl"} <= set(SPEAKERS)


def test_every_speaker_speaks_differently():
    clips = {name: speak("The quick brown fox.", name) for name in SPEAKERS}
    for name, x in clips.items():
        assert x.shape[0] == 1 and 0.5 < x.shape[1] / SR < 4, name
        assert torch.isfinite(x).all() and x.abs().max() > 0.05, name
    sigs = {name: (x.shape[1], round(float(x.abs().mean()), 5)) for name, x in clips.items()}
    assert len(set(sigs.values())) == len(sigs)


def test_speak_matches_espeak_read_directly(tmp_path):
    "Parity: the clip equals espeak-ng's own WAV (written with -w), trimmed and resampled by torchaudio."
    text = "It was a dark and stormy night."
    args = [a for a in speech.espeak_args("old woman", "sad") if a not in ("--stdin", "--stdout")]
    (tmp_path / "t.txt").write_text(text)
    subprocess.run(["espeak-ng", *args, "-w", str(tmp_path / "t.wav"), "-f", str(tmp_path / "t.txt")], check=True)
    data, sr = sf.read(str(tmp_path / "t.wav"), dtype="float32", always_2d=True)
    ref = torchaudio.functional.resample(speech.trim_silence(torch.from_numpy(data.T.copy())), sr, SR)
    x = speak(text, "old woman", "sad")
    assert x.shape == ref.shape and torch.allclose(x, ref, atol=1e-5)


def _f0(x):
    "Median pitch (Hz) of the voiced 40 ms frames: the autocorrelation peak between 60 and 500 Hz."
    x = x[0].double().numpy(); found = []
    for i in range(0, len(x) - 640, 320):
        w = x[i:i + 640] * np.hanning(640)
        if np.sqrt(np.mean(w ** 2)) < 0.02: continue
        ac = np.correlate(w, w, "full")[639:]
        k = SR // 500 + int(np.argmax(ac[SR // 500: SR // 60]))
        if ac[k] > 0.3 * ac[0]: found.append(SR / k)
    return float(np.median(found))


def test_pitch_estimator_on_a_tone():
    t = torch.arange(SR) / SR
    assert abs(_f0((0.5 * torch.sin(2 * math.pi * 180 * t))[None]) - 180) < 3


def test_emotions_change_prosody():
    text = "I cannot believe what happened today."
    sad, excited = speak(text, "woman", "sad"), speak(text, "woman", "excited")
    neutral = speak(text, "woman")
    assert sad.shape[1] > neutral.shape[1] > excited.shape[1]  # rate
    assert _f0(excited) > _f0(neutral) > _f0(sad)  # pitch (torchaudio's pitch detector)
    f0 = {name: _f0(speak(text, name)) for name in ("man", "woman", "girl", "boy", "old man", "old woman")}
    assert f0["girl"] > f0["woman"] > f0["man"] and f0["boy"] > f0["man"] and f0["old woman"] > f0["old man"], f0


def test_speech_deterministic_and_case_insensitive():
    assert torch.equal(speak("Hello.", "Old  Man", "SAD"), speak("Hello.", "old man", "sad"))


def test_option_like_text_is_spoken_literally():
    "Text goes on stdin: '-v xx' is not an option, '<b>' is not markup."
    text = "-v xx <b>hi</b>"
    ph = phonemes(text)
    assert "sl'aS" in ph and "v'i:" in ph  # 'slash' and 'v' are spoken
    x = speak(text)
    assert x.shape[1] > 2 * speak("hi").shape[1]
    # the voice did not change: the clip is what the narrator says for the same text read from a file
    assert torch.equal(x, speak(text, "narrator"))


def test_ssml_is_not_obeyed(tmp_path):
    text = '<prosody rate="x-slow">hi</prosody>'
    literal = speak(text)
    args = [a for a in speech.espeak_args() if a not in ("--stdin", "--stdout")]
    (tmp_path / "t.txt").write_text(text)
    parsed = subprocess.run(["espeak-ng", *args, "-m", "--stdout", "-f", str(tmp_path / "t.txt")], capture_output=True).stdout
    parsed_len = sf.info(io.BytesIO(parsed)).frames / sf.info(io.BytesIO(parsed)).samplerate
    # with markup on (-m) espeak-ng would say only "hi"; ours speaks the tag's words too
    assert literal.shape[1] / SR > 2 * parsed_len


def test_phoneme_escape_is_defused():
    assert phonemes("[[h@'loU]]") != phonemes("hello")
    assert speech.clean_text("a [[b]] c") == "a [ [b] ] c"


@pytest.mark.parametrize("text", ["", "   ", "...", "!?", None, 42])
def test_empty_text_is_an_error(text):
    with pytest.raises(ToolError, match="text"):
        speak(text)


def test_unknown_speaker_and_emotion_name_the_nearest():
    with pytest.raises(ToolError, match="nearest known: old man"):
        speak("Hi.", "old men")
    with pytest.raises(ToolError, match="emotion.*angry"):
        speak("Hi.", "narrator", "angery")


def test_espeak_missing(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("AUDIOCHAT_ESPEAK", raising=False)
    with pytest.raises(EspeakNotFoundError, match="apt-get install espeak-ng"):
        speak("Hello there.")
    result = Toolbox().call("text_to_speech", {"text": "Hello there.", "speaker": "narrator"})
    assert "apt-get install espeak-ng" in result["error"]
    with pytest.raises(FileNotFoundError, match="espeak-ng"):
        render(scene({"id": "s1", "kind": "speech", "speaker": "man", "text": "Hi.", "start": 0, "end": 2}))


def test_espeak_program_override(monkeypatch):
    monkeypatch.setenv("AUDIOCHAT_ESPEAK", shutil.which("espeak-ng"))
    monkeypatch.setenv("PATH", "/nonexistent")
    assert speak("Hi.").shape[1] > 0


# ---------------------------------------------------------------- sound effects and music

def test_sound_effect_catalogue():
    assert len(SOUND_EFFECTS) >= 24
    for name, sfx in SOUND_EFFECTS.items():
        assert sfx.name == name and sfx.caption and len(sfx.paraphrases) >= 3
        for phrase in (name, sfx.caption, *sfx.paraphrases):
            assert resolve_sound(phrase, "sfx") == name, phrase


@pytest.mark.parametrize("name", list(SOUND_EFFECTS))
def test_sfx_duration_seed(name):
    x = synth_sfx(name, 1.3, seed=3)
    assert x.shape == (1, int(1.3 * SR)) and x.dtype == torch.float32
    assert torch.isfinite(x).all() and 0.5 < x.abs().max() <= 0.9 + 1e-6
    assert torch.equal(x, synth_sfx(name, 1.3, seed=3))
    assert not torch.equal(x, synth_sfx(name, 1.3, seed=4))
    assert synth_sfx(name, 0.05, seed=0).shape == (1, 800)


def _features(x):
    "Mean and std over time of log energies in 32 log-spaced bands (64 ms frames)."
    x = x[0].double().numpy()
    frames = np.lib.stride_tricks.sliding_window_view(x, 1024)[::512] * np.hanning(1024)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    edges = np.geomspace(50, SR / 2, 33) * 1024 / SR
    bands = np.stack([power[:, int(a):max(int(a) + 1, int(b))].sum(1) for a, b in zip(edges[:-1], edges[1:])], 1)
    logb = np.log(bands + 1e-8)
    return torch.from_numpy(np.concatenate([logb.mean(0), logb.std(0)]))


def test_sound_effects_are_distinguishable():
    "Nearest-centroid on log-mel statistics: another seed of each class is recognised as that class."
    names = list(SOUND_EFFECTS)
    ref = torch.stack([_features(synth_sfx(n, 2.5, seed=0)) for n in names])
    hits = 0
    for i, n in enumerate(names):
        f = _features(synth_sfx(n, 2.5, seed=11))
        hits += int(torch.cdist(f[None], ref).argmin()) == i
    assert hits >= len(names) - 2, f"{hits}/{len(names)}"


def test_music_moods():
    assert len(MUSIC_MOODS) >= 4
    clips = {m: synth_music(m, 4.0, seed=0) for m in MUSIC_MOODS}
    for m, x in clips.items():
        assert x.shape == (1, 4 * SR) and torch.isfinite(x).all() and x.abs().max() > 0.5
        assert torch.equal(x, synth_music(m, 4.0, seed=0))
        assert not torch.equal(x, synth_music(m, 4.0, seed=1))
    for phrase in ("sad piano melody", "an upbeat tune", "Suspense music"):
        assert resolve_sound(phrase, "music") in MUSIC_MOODS


def test_music_follows_the_chords():
    "The strongest pitch classes of a calm bed (F major 7 family) come from its progression, not elsewhere."
    x = synth_music("calm", 8.0, seed=0)[0].double().numpy()
    spec = np.abs(np.fft.rfft(x)); f = np.fft.rfftfreq(len(x), 1 / SR)
    ok = (f > 60) & (f < 2000)
    pc = np.zeros(12)
    np.add.at(pc, np.round(12 * np.log2(f[ok] / 440) + 69).astype(int) % 12, spec[ok] ** 2)
    mood = MUSIC_MOODS["calm"]
    allowed = {(mood.key + r + i) % 12 for r, ch in mood.progression for i in ch}
    top = set(np.argsort(pc)[-3:])
    # the key moves by at most 2 semitones with the seed: some transposition of the chord tones holds the top 3
    assert any({(p - s) % 12 for p in top} <= allowed for s in range(-2, 3))


def test_resolve_sound_rules():
    assert resolve_sound("  STEADY rain   on a window ") == "rain"
    assert resolve_sound("somebody knocking loudly") == "door knock"
    assert resolve_sound("eerie", "music") == "mysterious"
    with pytest.raises(UnknownSoundError) as e:
        resolve_sound("sirene wailng")
    assert "siren" in e.value.nearest and "nearest known" in str(e.value)
    with pytest.raises(UnknownSoundError, match="no music mood"):
        resolve_sound("polka", "music")
    with pytest.raises(ToolError, match="kind"):
        resolve_sound("rain", "speech")


@pytest.mark.parametrize("bad", [0, -1, float("nan"), 1e9, "2", True])
def test_bad_durations(bad):
    with pytest.raises(ToolError, match="duration"):
        synth_sfx("rain", bad)


# ---------------------------------------------------------------- the mixer

DEMO = {"duration": 6, "sources": [
    {"id": "rain", "kind": "sfx", "caption": "steady rain on a window", "start": 0, "end": 6, "loudness_db": -34, "pan": -0.3},
    {"id": "s1", "kind": "speech", "speaker": "narrator", "emotion": "calm", "text": "It was a dark night.",
     "start": 0.4, "end": 2.6, "loudness_db": -20, "pan": -0.2},
    {"id": "knock", "kind": "sfx", "caption": "three knocks on a door", "start": 3.0, "end": 3.9, "loudness_db": -22, "pan": 0.6},
    {"id": "bed", "kind": "music", "caption": "mysterious music", "start": 1, "end": 6, "loudness_db": -30, "pan": 0},
]}


@pytest.fixture(scope="module")
def demo_render():
    return render(DEMO, seed=0)


def test_render_shapes(demo_render):
    r = demo_render
    assert r.mix.shape == (2, 6 * SR) and set(r.stems) == {"rain", "s1", "knock", "bed"}
    assert all(s.shape == (2, 6 * SR) for s in r.stems.values())
    assert not r.limited and torch.allclose(r.mix, sum(r.stems.values()), atol=1e-6)


def test_render_deterministic(demo_render):
    again = render(DEMO, seed=0)
    assert torch.equal(again.mix, demo_render.mix)
    other = render(DEMO, seed=1)
    assert not torch.equal(other.stems["rain"], demo_render.stems["rain"])
    assert not torch.equal(other.stems["bed"], demo_render.stems["bed"])
    assert torch.equal(other.stems["s1"], demo_render.stems["s1"])  # speech does not depend on the seed


def test_render_accepts_json_and_dict(demo_render):
    assert torch.equal(render(json.dumps(DEMO)).mix, demo_render.mix)


def test_stem_loudness_matches_scene(demo_render):
    for s in Scene.from_dict(DEMO).sources:
        i = round(s.start * SR)
        n = tools.source_audio(s, 0).shape[1]  # the clip's length (speech may end before its span)
        active = demo_render.stems[s.id][:, i:i + n]
        assert abs(lufs(active) - s.loudness_db) < 0.5, s.id


def test_stem_placement(demo_render):
    knock = demo_render.stems["knock"]
    assert knock[:, : 3 * SR].abs().max() == 0 and knock[:, round(3.9 * SR):].abs().max() == 0
    assert knock[:, 3 * SR: round(3.9 * SR)].abs().max() > 0
    s1 = demo_render.stems["s1"]
    assert s1[:, : round(0.4 * SR)].abs().max() == 0 and s1[:, round(2.6 * SR):].abs().max() == 0


@pytest.mark.parametrize("p", [-1.0, -0.3, 0.0, 0.6, 1.0])
def test_pan_balance(p):
    r = render(scene({"id": "w", "kind": "sfx", "caption": "wind", "start": 0, "end": 2, "loudness_db": -25, "pan": p}, duration=2))
    left, right = r.stems["w"]
    gl, gr = pan_gains(p)
    assert torch.allclose(left * gr, right * gl, atol=1e-6)  # both channels are the same clip, in ratio gl : gr
    assert abs(float(left.norm() ** 2 + right.norm() ** 2) / float((left + right).norm() ** 2) - 1 / (gl + gr) ** 2) < 1e-4
    assert abs(lufs(r.stems["w"]) - (-25)) < 0.5  # constant power: loudness does not depend on pan
    if p == -1: assert right.abs().max() < 1e-6
    if p == 1: assert left.abs().max() < 1e-6


def test_limiter_reports_and_limits():
    loud = scene(*[{"id": f"x{i}", "kind": "sfx", "caption": c, "start": 0, "end": 2, "loudness_db": -3}
                   for i, c in enumerate(["engine", "siren", "applause"])], duration=2)
    r = render(loud)
    assert r.limited and r.peak > LIMIT_CEILING
    assert r.mix.abs().max() <= LIMIT_CEILING + 1e-6
    assert math.isclose(r.peak, float(sum(r.stems.values()).abs().max()), rel_tol=1e-6)
    quiet = render(scene({"id": "a", "kind": "sfx", "caption": "rain", "start": 0, "end": 2, "loudness_db": -30}, duration=2))
    assert not quiet.limited and quiet.peak < LIMIT_CEILING


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.2, 3.0), st.floats(0.3, 1.0))
def test_limit_peaks_property(seed, gain, ceiling):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4000, generator=g) * gain * torch.linspace(0.1, 1, 4000)
    y = limit_peaks(x, ceiling)
    assert y.abs().max() <= ceiling + 1e-6
    assert (y.abs() <= x.abs() + 1e-7).all()  # it only turns down
    far = torch.ones(4000, dtype=torch.bool)  # samples more than 2 limiter windows from any over-ceiling peak
    for i in torch.nonzero(x.abs().amax(0) > ceiling).flatten().tolist(): far[max(0, i - 161): i + 162] = False
    assert torch.equal(y[:, far], x[:, far])  # untouched


def test_speech_is_sped_up_to_fit():
    text = "It was a dark and stormy night."
    natural = speak(text, "narrator").shape[1] / SR
    span = round(natural / 1.3, 2)
    r = render(scene({"id": "s1", "kind": "speech", "speaker": "narrator", "text": text, "start": 0.5, "end": 0.5 + span}))
    stem = r.stems["s1"]
    assert stem[:, round((0.5 + span) * SR):].abs().max() == 0  # nothing spills past the span
    active = torch.nonzero(stem.abs().amax(0) > 0).flatten()
    assert (active[-1] - active[0]) / SR > 0.85 * span  # it was not cut short either


def test_impossible_timing_is_an_error():
    text = "This sentence is far too long to be spoken in half a second."
    with pytest.raises(TimingError, match=r"source 's1'.end.*make the span at least") as e:
        render(scene({"id": "s1", "kind": "speech", "speaker": "narrator", "text": text, "start": 0, "end": 0.5}))
    need = float(str(e.value).split("at least ")[1].split(" s")[0])
    assert need > speak(text).shape[1] / SR / MAX_SPEEDUP
    render(scene({"id": "s1", "kind": "speech", "speaker": "narrator", "text": text, "start": 0, "end": min(need, 4)}, duration=4))


def test_unknown_sound_in_scene_names_the_source():
    with pytest.raises(UnknownSoundError, match="source 'x'.caption.*nearest known"):
        render(scene({"id": "x", "kind": "sfx", "caption": "a dragon roaring", "start": 0, "end": 1}))
    with pytest.raises(ToolError, match="source 's'.speaker"):
        render(scene({"id": "s", "kind": "speech", "speaker": "wizard", "text": "Hi.", "start": 0, "end": 1}))


# ---------------------------------------------------------------- Toolbox

def test_schemas_are_openai_tools():
    schemas = Toolbox().schemas()
    json.dumps(schemas)
    names = [s["function"]["name"] for s in schemas]
    assert {"text_to_speech", "text_to_audio", "text_to_music", "render_scene"} <= set(names)
    for s in schemas:
        assert s["type"] == "function" and s["function"]["description"]
        params = s["function"]["parameters"]
        assert params["type"] == "object"
        jsonschema.Draft202012Validator.check_schema(params)


def test_toolbox_calls():
    tb = Toolbox(seed=0)
    a = tb.call("text_to_speech", '{"text": "Did you hear that?", "speaker": "girl", "emotion": "scared"}')
    b = tb.call("text_to_audio", {"caption": "an owl hooting", "duration": 1.5})
    c = tb.call("text_to_music", {"mood": "happy", "duration": 2})
    d = tb.call("render_scene", {"scene": DEMO})
    e = tb.call("render_scene", {"scene": json.dumps(DEMO)})  # scene as JSON text
    for r in (a, b, c, d, e):
        json.dumps(r)
        assert "error" not in r and r["clip_id"] in tb.clips
    assert b["sound"] == "owl" and b["duration"] == 1.5 and tb.clip(b["clip_id"]).shape == (1, int(1.5 * SR))
    assert c["mood"] == "happy" and d["duration"] == 6 and d["limited"] is False
    assert tb.clip(d["clip_id"]).shape == (2, 6 * SR)
    assert len({a["clip_id"], b["clip_id"], c["clip_id"], d["clip_id"]}) == 4
    assert len(tb.log) == 5
    with pytest.raises(KeyError, match="no clip"):
        tb.clip("clip99")


def test_toolbox_seeded():
    x = Toolbox(seed=5).call("text_to_audio", {"caption": "rain", "duration": 1})
    tb1, tb2, tb3 = Toolbox(seed=5), Toolbox(seed=5), Toolbox(seed=6)
    for tb in (tb1, tb2, tb3): tb.call("text_to_audio", {"caption": "rain", "duration": 1})
    assert torch.equal(tb1.clip("clip1"), tb2.clip("clip1")) and not torch.equal(tb1.clip("clip1"), tb3.clip("clip1"))
    assert x["clip_id"] == "clip1"


@pytest.mark.parametrize("name,arguments,expected", [
    ("make_coffee", {}, "unknown tool 'make_coffee'"),
    ("text_to_speech", "{not json", "not valid JSON"),
    ("text_to_speech", "[1, 2]", "must be a JSON object"),
    ("text_to_speech", {"speaker": "girl"}, "missing required argument 'text'"),
    ("text_to_speech", {"text": "Hi", "speaker": "wizard"}, "argument 'speaker': 'wizard' is not one of"),
    ("text_to_speech", {"text": "Hi", "speaker": "girl", "mood": "sad"}, "unknown argument(s) 'mood'"),
    ("text_to_speech", {"text": "  ...  ", "speaker": "girl"}, "text: must contain at least one word"),
    ("text_to_speech", {"text": 5, "speaker": "girl"}, "argument 'text'"),
    ("text_to_audio", {"caption": "a dragon roaring", "duration": 2}, "nearest known"),
    ("text_to_audio", {"caption": "rain", "duration": -1}, "argument 'duration'"),
    ("text_to_audio", {"caption": "rain", "duration": "2"}, "argument 'duration'"),
    ("text_to_music", {"mood": "happy"}, "missing required argument 'duration'"),
    ("text_to_music", {"mood": "polka", "duration": 2}, "no music mood matches 'polka'"),
    ("render_scene", {"scene": "{oops"}, "argument 'scene' is not valid JSON"),
    ("render_scene", {"scene": {"duration": 2, "sources": [{"id": "a", "kind": "sfx", "caption": "rain", "start": 1.5, "end": 1}]}},
     "end"),
    ("render_scene", {"scene": {"duration": 2, "sources": [{"id": "a", "kind": "sfx", "caption": "rain", "start": 0, "end": 3}]}},
     "duration"),
    ("render_scene", {"scene": {"duration": 2, "sources": [{"id": "s", "kind": "speech", "speaker": "man",
                                "text": "This is far too much to say in a tenth of a second.", "start": 0, "end": 0.1}]}},
     "make the span at least"),
])
def test_toolbox_errors(name, arguments, expected):
    result = Toolbox().call(name, arguments)
    assert set(result) == {"error"}, result
    assert expected in result["error"], result["error"]
    json.dumps(result)


# ---------------------------------------------------------------- registering a new sound effect

def _frog(n, rng):
    def croak(i):
        m = int(rng.uniform(0.12, 0.25) * SR)
        return synth.tone(rng.uniform(180, 260), m, harmonics=(1, 0.6, 0.3)) * synth.decay(m, 0.08, attack=0.01)
    return synth.events(n, synth.times_poisson(n, rng, 2.5), croak)


@pytest.fixture
def frog():
    effect = synth.register_sound("frog", _frog, ["a frog croaking", "frogs croak in the pond", "croaking frogs at night"])
    try: yield effect
    finally: synth.unregister_sound("frog")


def test_register_sound_reaches_every_user(frog):
    from audiochat.eval.scorer import caption_classes, source_class
    assert frog.caption == "a frog croaking" and SOUND_EFFECTS["frog"] is frog
    assert resolve_sound("frogs croaking near the pond") == "frog"
    x = synth_sfx("a frog croaking", 1.0, seed=1)
    assert x.shape == (1, SR) and torch.equal(x, synth_sfx("frog", 1.0, seed=1)) and 0.5 < x.abs().max() <= 0.9 + 1e-6
    r = render(scene({"id": "f", "kind": "sfx", "start": 0.5, "end": 2.0, "caption": "croaking frogs at night"}))
    assert r.stems["f"][:, : SR // 2].abs().max() == 0 and r.stems["f"][:, SR // 2:].abs().max() > 0
    box = tools.Toolbox(seed=0)
    assert "frog" in json.dumps(box.schemas())
    assert caption_classes()["sfx:frog"] == ["a frog croaking", "frogs croak in the pond", "croaking frogs at night"]
    assert source_class(Source("f", "sfx", 0, 1, caption="a frog croaking")) == "sfx:frog"


def test_register_sound_replaces_and_unregisters():
    synth.register_sound("frog", _frog, ["a frog croaking"])
    synth.register_sound("frog", _frog, ["a toad croaking", "toads"])  # a rerun cell replaces it
    try:
        assert SOUND_EFFECTS["frog"].caption == "a toad croaking" and resolve_sound("toads") == "frog"
    finally: synth.unregister_sound("frog")
    assert "frog" not in SOUND_EFFECTS
    with pytest.raises(sounds.UnknownSoundError): resolve_sound("a toad croaking")
    with pytest.raises(KeyError, match="no registered sound"): synth.unregister_sound("frog")


@pytest.mark.parametrize("args, match", [
    (("rain", _frog, ["more rain"]), "built-in"),
    (("", _frog, ["x"]), "non-empty string"),
    (("frog", "not a function", ["x"]), "must be a function"),
    (("frog", _frog, []), "at least one paraphrase"),
    (("frog", _frog, ["a dog barking"]), "already belongs to 'dog barking'"),
    (("frog", lambda n, rng: np.zeros((2, n)), ["x"]), "1-D array"),
    (("frog", lambda n, rng: np.full(n, np.nan), ["x"]), "finite"),
])
def test_register_sound_bad_input(args, match):
    with pytest.raises((ValueError, TypeError), match=match): synth.register_sound(*args)
    assert "frog" not in SOUND_EFFECTS
