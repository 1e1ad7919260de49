"""Chat latency on this machine with the tiny preset: CoT tokens/s with and without the scene grammar, diffusion
evaluations/s and codec decode time for a 10-second story turn, and the tool cascade (render the scene) for comparison.
Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/chat.py"""
import statistics
import tempfile
import time
from pathlib import Path

import torch

from audiochat.core.scene import Scene
from audiochat.model.forcing import Turn
from audiochat.model.grammar import decode_text
from audiochat.serve.chat import ChatEngine
from audiochat.sim.data import DATA_SAMPLES
from audiochat.sim.tools import render
from audiochat.training.train import train_tiny_run

torch.set_num_threads(1)
tmp = Path(tempfile.mkdtemp())
run = train_tiny_run(tmp / "run", steps=3)
e = ChatEngine.load(run, steps=25, cfg_scale=3.0)
print(f"model: {sum(p.numel() for p in e.model.parameters()) / 1e6:.2f} M parameters ({e.model.config.arch}), "
      f"threads: {torch.get_num_threads()}, device: {e.device}")
ctx = e._context([Turn("user", "A 10-second story: a girl greets an old man while rain falls.")])
for name, grammar in (("without grammar", None), ("with grammar", e.scene_grammar)):
    speeds = [decode_text(e.model, *ctx, max_new_tokens=256, grammar=grammar, pieces=e.pieces).tokens_per_s for _ in range(3)]
    print(f"CoT {name:16s}: {statistics.median(speeds):7.0f} tokens/s (median of 3, 256 tokens)")
scene = Scene.from_json((DATA_SAMPLES / "demo" / "scene.json").read_text())
scene = Scene(scene.sources, 10.0)
cot = scene.to_json()
n_tokens = len(e.tokenizer.encode(cot, add_special_tokens=False))
turns = [Turn("user", "A 10-second story: a girl greets an old man while rain falls.")]
rows = []
for _ in range(3):
    from audiochat.serve.replies import Timings
    t = Timings()
    e.render(turns, scene, cot, t)
    rows.append(t)
t = rows[len(rows) // 2]
cot_s = n_tokens / statistics.median(speeds)
print(f"10-second story turn, 25 DPM-Solver++ steps with CFG 3 ({t.diffusion_steps} model evaluations, 400 frames):")
print(f"  CoT     {cot_s:6.2f} s  ({n_tokens} tokens of the scene JSON at the grammar speed above)")
print(f"  diffusion {statistics.median(r.diffusion_seconds for r in rows):6.2f} s  ({statistics.median(r.steps_per_s for r in rows):.1f} evaluations/s)")
print(f"  decode  {statistics.median(r.decode_seconds for r in rows):6.2f} s  (codec, tiny preset)")
t0 = time.perf_counter(); render(scene, seed=0); cascade = time.perf_counter() - t0
print(f"cascade (render the same scene with the tools: espeak-ng, synthesis, mixing): {cascade:.2f} s")
print("paper anchors (other scale: a 3.6B model on a GPU, 48 kHz): AudioChat 32 s per story, WavJourney 628 s")
