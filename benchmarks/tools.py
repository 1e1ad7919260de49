"""Time the tools on this machine: per tool call and per second of audio produced.

Run: .venv/bin/python benchmarks/tools.py [--threads N] [--repeat R]
Speech is timed uncached (the espeak-ng cache is cleared before every call)."""
import argparse
import statistics
import time
from pathlib import Path

import torch

from audiochat.core.audio import SAMPLE_RATE
from audiochat.core.scene import Scene
from audiochat.sim import sounds, speech, synth, tools


def timed(fn, repeat):
    "Median wall time (s) of `fn()` over `repeat` runs, and the last result."
    out, ts = None, []
    for _ in range(repeat):
        t = time.perf_counter(); out = fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def uncached(fn):
    def run():
        speech._speak_cached.cache_clear()
        return fn()
    return run


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    print(f"torch threads: {torch.get_num_threads()}, median of {a.repeat} runs\n")
    rows = []

    def row(name, seconds, audio_s):
        rows.append((name, seconds, audio_s))
        print(f"{name:<42} {seconds * 1000:9.1f} ms/call  {audio_s:6.2f} s audio  {seconds / audio_s * 1000:8.1f} ms per audio second")

    text = "It was a dark and stormy night, and the rain fell in torrents."
    t, x = timed(uncached(lambda: speech.speak(text, "narrator")), a.repeat)
    row("speak (espeak-ng + trim + resample)", t, x.shape[1] / SAMPLE_RATE)
    t, x = timed(lambda: speech.speak(text, "narrator"), a.repeat)
    row("speak, cached", t, x.shape[1] / SAMPLE_RATE)

    per_class = {}
    for name in sounds.SOUND_EFFECTS:
        per_class[name], _ = timed(lambda name=name: synth.synth_sfx(name, 5.0, 0), a.repeat)
    total = sum(per_class.values())
    row(f"synth_sfx, mean of {len(per_class)} classes (5 s)", total / len(per_class), 5.0)
    slow = max(per_class, key=per_class.get)
    row(f"synth_sfx, slowest class ({slow})", per_class[slow], 5.0)
    for mood in sounds.MUSIC_MOODS:
        t, _ = timed(lambda mood=mood: synth.synth_music(mood, 10.0, 0), a.repeat)
        row(f"synth_music {mood} (10 s)", t, 10.0)

    demo = Scene.from_json((Path(__file__).resolve().parent.parent / "data_samples/demo/scene.json").read_text())
    t, _ = timed(uncached(lambda: tools.render(demo, 0)), a.repeat)
    row(f"render demo scene ({len(demo.sources)} sources), uncached", t, demo.duration)
    t, _ = timed(lambda: tools.render(demo, 0), a.repeat)
    row("render demo scene, speech cached", t, demo.duration)

    tb = tools.Toolbox()
    t, _ = timed(lambda: tb.call("text_to_audio", {"caption": "a dragon", "duration": 2}), a.repeat)
    print(f"{'Toolbox.call validation error (no audio)':<42} {t * 1000:9.1f} ms/call")
    t, _ = timed(lambda: tb.call("text_to_audio", {"caption": "three knocks on a wooden door", "duration": 2}), a.repeat)
    row("Toolbox.call text_to_audio (2 s)", t, 2.0)
    t, _ = timed(uncached(lambda: tb.call("text_to_speech", {"text": text, "speaker": "girl", "emotion": "happy"})), a.repeat)
    row("Toolbox.call text_to_speech, uncached", t, tb.clips[f"clip{len(tb.clips)}"].shape[1] / SAMPLE_RATE)
    t, _ = timed(uncached(lambda: tb.call("render_scene", {"scene": demo.to_dict()})), a.repeat)
    row("Toolbox.call render_scene, uncached", t, demo.duration)


if __name__ == "__main__":
    main()
