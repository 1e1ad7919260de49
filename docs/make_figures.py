"""The figures of the README and docs/, drawn with the package (seconds on a CPU). Run from the repository root:
    OMP_NUM_THREADS=1 .venv/bin/python docs/make_figures.py [--eval runs/eval/results.json]
Writes docs/figures/{scene,mask,forcing,evaluation,learned,learned_edit}.png (evaluation.png only when an evaluation's
results are given, learned*.png only with --run: the run's story for a request next to the tools' rendering of the plan
it wrote, and an edit of that story before and after, the changed spans outlined; it prints the plans, the edit's
change, the answer to an edit about a sound the story lacks, and a held-out story understood beside its truth)."""
import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from audiochat.core.audio import plot_audio
from audiochat.core.scene import Scene
from audiochat.model.forcing import ForcingConfig, Turn, collate, noise_levels, pack_dialogue
from audiochat.model.tokenizer import dialogue_corpus, special_token_ids, train_tokenizer
from audiochat.model.transformer import Layout, build_mask
from audiochat.sim.data import DATA_SAMPLES
from audiochat.sim.tools import render

p = argparse.ArgumentParser()
p.add_argument("--eval", default=None, help="results.json of `audiochat eval` for the evaluation figure")
p.add_argument("--run", default=None, help="a trained run: its story for a request beside the tools' rendering of its plan")
p.add_argument("--out", default="docs/figures")
p.add_argument("--name", default="learned", help="file name (without .png) of the --run figure (default: learned)")
p.add_argument("--request", default=None, help="the story request of the --run figure (default: three, the first whose plan renders)")
a = p.parse_args()
out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
torch.set_num_threads(1)

def save(fig, name: str):
    fig.savefig(out / name, dpi=72); plt.close(fig); print("wrote", out / name)

# 1. a scene (the chain of thought) and its rendering by the tools: what the model plans, then hears
scene = Scene.from_json((DATA_SAMPLES / "demo" / "scene.json").read_text())
save(plot_audio(render(scene, seed=0).mix, spans=scene.spans(), title="a scene rendered by the tools; each source drawn as a span",
                figsize=(9, 3.4)), "scene.png")

# 2. the attention mask: causal text, bidirectional audio spans, causal across turns
layout = Layout.from_segments([[("text", 5), ("audio", 6), ("text", 4), ("audio", 6)]])
fig, ax = plt.subplots(figsize=(4.2, 4))
ax.imshow(build_mask(layout)[0, 0], cmap="Blues", interpolation="nearest")
ax.set(title="request+plan | span 1 | edit+plan | span 2", xlabel="key", ylabel="query")
ax.title.set_fontsize(9); fig.tight_layout(); save(fig, "mask.png")

# 3. noise levels of two-turn dialogues under the three policies: only forcing covers the deployment corner
tok = train_tokenizer(dialogue_corpus(100), vocab_size=400)
turns = [Turn("user", "A story."), Turn("assistant", "{}", audio=torch.zeros(3, 4)),
         Turn("user", "Louder."), Turn("assistant", "{}", audio=torch.zeros(3, 4))]
batch = collate([pack_dialogue(turns, tok)] * 500, special_token_ids(tok)["pad"])
fig, axes = plt.subplots(1, 3, figsize=(9, 3), sharey=True)
gen = torch.Generator().manual_seed(0)
for ax, policy in zip(axes, ("clean_history", "shared", "forcing")):
    t, _ = noise_levels(batch, ForcingConfig(policy=policy, clean_p=0, cfg_p=0), gen)
    ax.scatter(t[:, 0], t[:, 1], s=3, alpha=0.5)
    ax.plot([0], [1], "r*", markersize=14, label="deployment: clean history, noise target")
    ax.set(title=policy, xlabel="history span t", xlim=(-0.05, 1.05), ylim=(-0.05, 1.05))
axes[0].set_ylabel("target span t"); axes[0].legend(fontsize=7, loc="lower right")
fig.tight_layout(); save(fig, "forcing.png")

# 4. the evaluation overview, when results are given
if a.eval:
    from audiochat.eval.report import plot_overview
    fig = plot_overview(json.loads(Path(a.eval).read_text())["summary"])
    save(fig, "evaluation.png")

# 5. a trained run's story: its audio for the plan it wrote, beside the tools' rendering of that plan
if a.run:
    from audiochat.serve.chat import ChatEngine
    from audiochat.serve.ui import scene_table
    engine = ChatEngine.load(a.run, steps=25)
    from audiochat.sim.sounds import ToolError
    requests = ["I need a 7-second story. On a rainy night, a girl greets an old man at the door. Voices: narrator, girl. Sounds: steady rain falling and a dog barking.",
                "Create a scene: In a quiet kitchen, a tired detective hears a knock. Include a clock ticking and a knock on a door. Speakers: narrator. Keep it near 6 s.",
                "Tell me a short audio story: a girl greets an old man while steady rain falls, then a dog barks."]
    requests = [a.request] if a.request else requests
    for request in requests:  # the first plan the tools can render (a valid scene is not always renderable)
        engine.reset(); story = engine.tell(request)
        try: render(story.scene, seed=0); break
        except ToolError as e: print(f"the tools cannot render the plan for {request[:40]!r}: {e}")
    print(request); print(scene_table(story.scene))
    fig, axes = plt.subplots(2, 1, figsize=(9, 5.2), sharex=True)
    for ax, (x, title) in zip(axes, ((story.audio, "the model's audio for the plan it wrote"),
                                     (render(story.scene, seed=0).mix, "the tools' rendering of the same plan"))):
        spec = torch.stft(x.mean(0), 1024, 256, window=torch.hann_window(1024), return_complex=True).abs().clamp_min(1e-5).log10()
        ax.imshow(spec.numpy(), origin="lower", aspect="auto", cmap="magma", extent=(0, x.shape[-1] / 16000, 0, 8))
        for k, (start, end, label) in enumerate(story.scene.spans()):
            ax.plot([start, end], [7.6 - 0.5 * k] * 2, lw=3); ax.text(start, 7.75 - 0.5 * k, label[:40], fontsize=6, color="w")
        ax.set(title=title, ylabel="kHz")
    axes[1].set_xlabel("seconds"); fig.suptitle(f"request: {request}", fontsize=8); fig.tight_layout(); save(fig, f"{a.name}.png")
    # an edit of that story: the change the model writes, and the audio before and after it
    from audiochat.core.audio import plot_before_after
    from audiochat.core.edits import edited_spans
    sound = next((x for x in story.scene.sources if x.kind == "sfx"), story.scene.sources[0])
    name = sound.caption if sound.kind != "speech" else f"{sound.speaker}'s line"
    edit = engine.edit(f"Make the {name} quieter by 10 dB.")
    if edit.audio is not None:
        print(edit.request, "->", edit.edit.to_json() if edit.edit else edit.cot)
        save(plot_before_after(story.audio, edit.audio, engine.codec.config.sample_rate, edited_spans(story.scene, edit.scene),
                               f"{edit.request}  ->  {edit.edit.to_json() if edit.edit else 'the scene restated'}"), f"{a.name}_edit.png")
    else: print(f"the model answered the edit in words: {edit.message}")
    from audiochat.eval.demo import absent_edit
    absent = engine.edit(absent_edit(story.scene))
    print(absent.request, "->", absent.message or (absent.edit.to_json() if absent.edit else absent.cot))
    # understanding: the first story of StoryGen-Eval-mini (never trained on), the scene the model hears beside the true one
    import tempfile

    from audiochat.eval.demo import held_out_story
    heard_audio, truth = held_out_story(Path(tempfile.mkdtemp()) / "held-out")
    heard = engine.understand(heard_audio, 16000)
    print("the model hears a held-out story as:"); print(scene_table(heard.scene)); print("the truth:"); print(scene_table(truth))
