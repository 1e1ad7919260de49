"""Does a trained run tell a doable edit from an edit of a sound that is not there, and does it describe audio?

For each StoryGen-Eval-mini dialogue the context is the true story (request, scene, the codec latents of its audio);
then, with the CoT decoder only (no audio is generated):
- the dialogue's real first edit instruction: answered with a scene (good) or in words (a false refusal);
- an instruction about a sound effect the story lacks (`missing_source_request`): answered in words (good) or with a
  scene (the model edits something that is not there);
- understanding: the story's audio with UNDERSTAND_PROMPT; is the scene valid, how many speech sources and sound
  sources does it list against the truth. Twice: on the whole story, and on the first `data.max_frames` frames
  (what training shows the model) against `heard_scene` of that cut.
Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/chat_answers.py [--run runs/pipeline/model] [--dialogues 30]"""
import argparse
import random
import time
from pathlib import Path

import torch

from audiochat.core.scene import Scene
from audiochat.model.forcing import Turn
from audiochat.serve.chat import ChatEngine
from audiochat.serve.replies import ChatError
from audiochat.sim.copilot import UNDERSTAND_PROMPT, heard_scene, missing_source_request
from audiochat.sim.data import build_eval, read_records

p = argparse.ArgumentParser()
p.add_argument("--run", default="runs/pipeline/model")
p.add_argument("--split", default="runs/storygen-eval-mini", help="built with `audiochat data eval` if missing")
p.add_argument("--dialogues", type=int, default=30)
a = p.parse_args()
torch.set_num_threads(1)
split = Path(a.split)
if not (split / "summary.json").exists(): build_eval(split, progress=False)
e = ChatEngine.load(a.run, retries=0)
print(f"run {a.run}: {e.model.config.arch}, answers in words allowed: {e.answers}")
counts = dict(real_scene=0, real_words=0, real_fail=0, missing_words=0, missing_scene=0, missing_fail=0)
for k in ("whole", "cut"):
    counts |= {f"{k}_understood": 0, f"{k}_fail": 0, f"{k}_speech_err": 0, f"{k}_sfx_err": 0, f"{k}_found": 0, f"{k}_named": 0}
cut = e.config.data.max_frames
t0 = time.perf_counter()
records = list(read_records(split))[: a.dialogues]
for i, r in enumerate(records):
    story, edit = r["turns"][0], r["turns"][1]
    scene = Scene.from_dict(story["scene"])
    z = e.encode(story["audio"])
    history = [Turn("user", story["user"]), Turn("assistant", scene.to_json(), audio=z)]
    missing, _ = missing_source_request(scene, random.Random(i))
    for key, text in (("real", edit["user"]), ("missing", missing)):
        try:
            s, _ = e.think(history + [Turn("user", text)], answers=e.answers)
            counts[f"{key}_{'words' if s is None else 'scene'}"] += 1
        except ChatError: counts[f"{key}_fail"] += 1
    for k, audio, truth in (("whole", z, scene), ("cut", z[:cut], heard_scene(scene, min(cut, len(z)) / 40))):
        try:
            u, _ = e.think([Turn("user", UNDERSTAND_PROMPT, audio=audio)])
            counts[f"{k}_understood"] += 1
            n = lambda sc, kinds: sum(x.kind in kinds for x in sc.sources)
            counts[f"{k}_speech_err"] += abs(n(u, ("speech",)) - n(truth, ("speech",)))
            counts[f"{k}_sfx_err"] += abs(n(u, ("sfx", "music")) - n(truth, ("sfx", "music")))
            names = lambda sc: {x.caption or x.speaker for x in sc.sources}  # sound captions and speaker names
            counts[f"{k}_found"] += len(names(u) & names(truth)); counts[f"{k}_named"] += len(names(truth))
        except ChatError: counts[f"{k}_fail"] += 1
N = len(records)
print(f"{N} dialogues in {time.perf_counter() - t0:.0f} s")
print(f"doable edit  -> scene {counts['real_scene']}/{N}, words (false refusal) {counts['real_words']}/{N}, invalid {counts['real_fail']}/{N}")
print(f"missing sound -> words (correct) {counts['missing_words']}/{N}, scene {counts['missing_scene']}/{N}, invalid {counts['missing_fail']}/{N}")
for k, what in (("whole", "whole story"), ("cut", f"first {cut} frames")):
    m = max(counts[f"{k}_understood"], 1)
    print(f"understanding ({what}) -> valid scenes {counts[f'{k}_understood']}/{N}; mean |#speech - true| "
          f"{counts[f'{k}_speech_err'] / m:.2f}, mean |#sounds+music - true| {counts[f'{k}_sfx_err'] / m:.2f}; "
          f"true captions and speakers named: {counts[f'{k}_found']}/{counts[f'{k}_named']}")
