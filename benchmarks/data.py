"""How fast does `audiochat data build` simulate dialogues, and where does the time go?

    .venv/bin/python benchmarks/data.py                 # tiny preset (32 dialogues), workers 1 and 2, plus a breakdown
    .venv/bin/python benchmarks/data.py --dialogues 8   # shorter

Prints dialogues per second of a full build (simulation, tools, filter, FLAC + JSONL writing) for each worker count,
then a single-process breakdown of the same kind of dialogues: time inside the template LLM, each tool, the mixer's
parts (speech, sound effects, music, loudness, limiter) and the FLAC writer. Timings are wall-clock on this machine.
"""
import argparse
import os
import platform
import tempfile
import time
from collections import defaultdict
from dataclasses import replace

import torch

import audiochat.sim.copilot as copilot
import audiochat.sim.data as data
import audiochat.sim.tools as tools


def end_to_end(config, workers: int) -> tuple[float, dict]:
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        s = data.build(d, config, workers=workers, progress=False)
        return time.perf_counter() - t, s


def breakdown(config, n: int) -> dict:
    "Inclusive seconds per timed function over `n` dialogues built in this process."
    spent = defaultdict(float)

    def timed(owner, name, label):
        fn = getattr(owner, name)

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[label] += time.perf_counter() - t
        setattr(owner, name, wrapper)
        return fn

    originals = [(tools.Toolbox, n_, timed(tools.Toolbox, n_, f"tool {n_}")) for n_ in ("text_to_speech", "text_to_audio", "text_to_music", "render_scene")]
    originals += [(tools, n_, timed(tools, n_, label)) for n_, label in [
        ("speak", "  espeak-ng speech (all calls)"), ("synth_sfx", "  sound-effect synthesis (all calls)"),
        ("synth_music", "  music synthesis (all calls)"), ("normalize_loudness", "  loudness normalisation (render)"),
        ("limit_peaks", "  peak limiter (render)")]]
    originals += [(copilot.TemplateLLM, "chat", timed(copilot.TemplateLLM, "chat", "template LLM (user + designer)")),
                  (tools.Toolbox, "call", timed(tools.Toolbox, "call", "all tool calls (incl. argument validation)")),
                  (data, "save_audio", timed(data, "save_audio", "FLAC writing"))]
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        s = data.build(d, replace(config, dialogues=n, shard_size=n), workers=1, progress=False)
        total = time.perf_counter() - t
    for owner, name, fn in originals:
        setattr(owner, name, fn)
    return dict(total=total, dialogues=s["dialogues"] + sum(s["rejected"].values()), spent=dict(spent))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dialogues", type=int, default=data.data_preset("tiny").dialogues)
    p.add_argument("--breakdown", type=int, default=8, help="dialogues in the single-process breakdown")
    a = p.parse_args()
    config = data.data_preset("tiny", dialogues=a.dialogues)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"config: {config}")
    torch.set_num_threads(1)
    # the breakdown first and on other seeds (run seed 1), so no cache is warm from the end-to-end builds
    b = breakdown(replace(config, seed=1), a.breakdown)
    for workers in (1, 2):
        seconds, s = end_to_end(config, workers)
        print(f"workers={workers}: {a.dialogues} dialogues in {seconds:.1f} s = {a.dialogues / seconds:.2f} dialogues/s "
              f"({s['turns']} turns, {s['hours'] * 3600 / seconds:.1f} s of audio per second; rejected {s['rejected'] or 'none'})"
              + ("; includes starting the worker processes (spawn: each imports torch)" if workers > 1 else ""))
    print(f"\nwhere the time goes (1 process, {b['dialogues']} dialogues, {b['total']:.1f} s, inclusive times):")
    for label, sec in sorted(b["spent"].items(), key=lambda kv: -kv[1]):
        print(f"  {label:<48} {sec:7.2f} s  {100 * sec / b['total']:5.1f} %")
    accounted = b["spent"].get("all tool calls (incl. argument validation)", 0) + b["spent"].get("template LLM (user + designer)", 0) + b["spent"].get("FLAC writing", 0)
    print(f"  {'rest (filter, records, JSON, bookkeeping)':<48} {b['total'] - accounted:7.2f} s  {100 * (b['total'] - accounted) / b['total']:5.1f} %")


if __name__ == "__main__":
    main()
