"""Time and peak memory of rendering one scene of N sources with a run: how a render's cost grows with the scene.

    OMP_NUM_THREADS=1 python benchmarks/render_cost.py RUN N [STEPS]

Each source is a rain sound with an 80-character caption; the scene is 8 s long. Prints the scene's characters and
tokens, the render's wall time and how much the process's peak RSS grew. Scenes over MAX_SOURCES / MAX_SCENE_CHARS
are refused (SceneError) before any rendering."""
import resource
import sys
import time

import torch

from audiochat.core.scene import Scene
from audiochat.model.forcing import Turn
from audiochat.serve.chat import ChatEngine


def main(run, n: int, steps: int = 25):
    torch.set_num_threads(1)
    engine = ChatEngine.load(run, steps=steps)
    caption = "rain falling on a tin roof"
    scene = Scene.from_dict({"duration": 8, "sources": [dict(id=f"s{i}", kind="sfx", caption=caption, start=0, end=8) for i in range(n)]})
    text = scene.to_json()
    tokens = len(engine.tokenizer(text)["input_ids"])
    before, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, time.perf_counter()
    engine.render([Turn("user", "a story")], scene, text)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    print(f"{n} sources, {len(text)} characters, {tokens} tokens, {steps} steps: {time.perf_counter() - t0:.1f} s, peak RSS +{grown:.0f} MB")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *(int(a) for a in sys.argv[3:4]))
