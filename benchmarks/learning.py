"""How far does a training run do the job? The learning benchmark of any run folder written by `audiochat train`.

On the first `--dialogues` dialogues of StoryGen-Eval-mini (or `--split DIR`):
1. Chain of thought, decoded greedily with the scene grammar off and on (`engine.think` on the true dialogue context:
   the true scenes and the codec latents of the true audio, so no audio is generated): valid scenes; for story
   requests the recall of the requested sound classes, the speaker count, the length (within 1 s of the requested
   one); for edits whether the written scene differs from the previous true scene by exactly the instructed change
   (right subtask, right source, right values within 0.25 s / 1.5 dB / 0.2 pan, nothing else changed), per subtask.
   Every share is over all requests: an invalid scene (or an edit answered in words) counts as a miss.
2. Audio (`--audio`, default on; `--steps` diffusion steps): story multiFLAM, Delta-multiFLAM and editFLAM per subtask
   of the model (tell, then edit its own audio, as `audiochat eval` does), of the ground truth and of the codec ceiling
   (the true audio through the run's codec), with the model's figures as ratios of both; "plan vs render": the
   multiFLAM of the model's audio against the scene it wrote, of the tools' rendering of that scene, and the mel
   distance between the two audios.
3. Generalisation: the figures of 1 on the hand-written requests and edits of `benchmarks/free_form.json`, and the
   story figures on `--held-out` requests written in the phrasing families kept out of training
   (`copilot.held_out_stories`: HELD_OUT_FAMILIES, for scenes like StoryGen-Eval-mini's).
4. Understanding: the model's scene of the story audio against the truth, on the whole story and on the first
   `data.max_frames` frames (what training shows the model): valid scenes, mean |error| of the number of speech and
   of sound sources, micro F1 of the multiset of speaker names and sound classes, tcpWER.
5. `--curve`: the figures of 1 and 4 at every `RUN/checkpoints/step-*`, plotted in `learning_curve.png` next to `--out`.
A run without a chain of thought gets only the audio figures.

Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/learning.py --run runs/pipeline/model [--dialogues 20] [--curve]
     [--no-audio] [--steps 10] [--out runs/pipeline/model/learning.json]"""
import argparse
import json
import math
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from tqdm.auto import tqdm

from audiochat.codec.training import SpectralDistance
from audiochat.core.audio import FRAME_RATE, SAMPLE_RATE
from audiochat.core.edits import diff, edited_spans
from audiochat.core.scene import Scene, to_seglst
from audiochat.eval.evaluate import as_eval_audio, load_scorer, resolve_split
from audiochat.eval.metrics import delta_multiflam, editflam, multiflam
from audiochat.eval.wer import tcpwer
from audiochat.model.forcing import Turn
from audiochat.model.sct import AudioChatModel
from audiochat.serve.chat import ChatEngine
from audiochat.serve.replies import ChatError
from audiochat.sim.copilot import (
    UNDERSTAND_PROMPT,
    assistant_plan,
    heard_scene,
    missing_source_request,
)
from audiochat.sim.data import load_turn, read_records
from audiochat.sim.requests import HELD_OUT_FAMILIES, NUMBER_WORDS, held_out_stories
from audiochat.sim.sounds import resolve_sound
from audiochat.sim.tools import render

FREE_FORM = Path(__file__).with_name("free_form.json")
TOLERANCE = dict(start=0.25, end=0.25, loudness_db=1.5, pan=0.2)  # a written number this close to the truth is right
SUBTASK_FIELDS = {"replace": {"caption"}, "loudness": {"loudness_db"}, "move": {"start", "end"}, "pan": {"pan"}}
FAILURES = (ValueError, RuntimeError, FileNotFoundError)  # ChatError, SceneError, ToolError; espeak-ng missing

# ---- scenes: labels, requests, edits ----------------------------------------------------------------------------

def sound_class(caption: str, kind: str) -> str:
    "The tools' class of a sound's caption (`resolve_sound`), or the caption itself when it names no known sound."
    if kind in ("sfx", "music"):
        try: return resolve_sound(caption, kind)
        except ValueError: pass
    return " ".join(str(caption).lower().split())

def source_label(s) -> str:
    "speaker:NAME for speech, sfx:CLASS or music:MOOD for sounds."
    return f"speaker:{s.speaker}" if s.kind == "speech" else f"{s.kind}:{sound_class(s.caption, s.kind)}"

def labels(scene: Scene, speech: bool = True) -> Counter:
    return Counter(source_label(s) for s in scene.sources if speech or s.kind != "speech")

def n_kind(scene: Scene, kinds) -> int: return sum(s.kind in kinds for s in scene.sources)

def speaker_count(scene: Scene) -> int: return len({s.speaker for s in scene.sources if s.kind == "speech"})

_SECONDS = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?|" + "|".join(NUMBER_WORDS) + r")(?:-| )?(?:seconds?|s)\b", re.I)

def requested_seconds(request: str, default: float | None) -> float | None:
    """The length a story request asks for ('about 10 seconds', 'a 7-second story', 'near 9 s', 'about ten seconds'),
    else `default`. Quoted lines are not read."""
    m = _SECONDS.search(re.sub(r'"[^"]*"', " ", request))
    if not m: return default
    word = m.group(1).lower()
    return float(NUMBER_WORDS.index(word) if word in NUMBER_WORDS else word)

def same_value(field: str, old, new, kind: str) -> bool:
    if field in TOLERANCE: return abs(new - old) <= TOLERANCE[field]
    if field == "caption" and old is not None and new is not None: return sound_class(old, kind) == sound_class(new, kind)
    return old == new

def effect(before: Scene, after: Scene) -> dict:
    "What `after` changed in `before`, numbers within TOLERANCE and captions of the same class counting as unchanged."
    d = diff(before, after)
    changed = {i: {k: v for k, v in f.items() if not same_value(k, *v, after[i].kind)} for i, f in d.changed.items()}
    stretched = d.duration is not None and abs(d.duration[1] - d.duration[0]) > TOLERANCE["end"]
    return dict(added=list(d.added), removed=list(d.removed), changed={i: f for i, f in changed.items() if f}, duration=stretched)

def edit_kind(e: dict) -> tuple[str, str | None]:
    "(subtask, target) of an effect: 'none' or 'several' changes, else the subtask and the source id (add: its label)."
    n = len(e["added"]) + len(e["removed"]) + len(e["changed"]) + e["duration"]
    if n != 1: return ("none" if n == 0 else "several"), None
    if e["added"]: return "add", source_label(e["added"][0])
    if e["removed"]: return "remove", e["removed"][0]
    if e["duration"]: return "duration", None
    (i, fields), = e["changed"].items()
    return next((k for k, v in SUBTASK_FIELDS.items() if set(fields) == v), "other"), i

def value_ok(field: str, old, new, want) -> bool:
    "Does a written value meet an expectation: a number (within TOLERANCE), a label, or a direction."
    if field == "caption": return new == want
    if isinstance(want, (int, float)): return abs(new - want) <= TOLERANCE.get(field, 0.25)
    if want == "centre": return abs(new) <= TOLERANCE["pan"]
    if want in ("up", "later", "right"): return new > old and (want != "right" or new > 0)
    if want in ("down", "earlier", "left"): return new < old and (want != "left" or new < 0)
    raise ValueError(f"unknown expectation {want!r} for {field}")

def judge_edit(before: Scene, written: Scene | None, subtask: str, target: str, expect: dict) -> dict:
    "Is `written` exactly the instructed edit of `before`: right subtask, right source, expected values, nothing else."
    if written is None: return dict(subtask=False, source=False, exact=False)
    e = effect(before, written)
    kind, got = edit_kind(e)
    ok_subtask = kind == subtask
    ok_source = ok_subtask and got == target
    if not ok_source or subtask == "remove": return dict(subtask=ok_subtask, source=ok_source, exact=ok_source)
    new = e["added"][0] if subtask == "add" else written[target]
    old = None if subtask == "add" else before[target]
    value = lambda s, f: None if s is None else (source_label(s) if f == "caption" else getattr(s, f))
    exact = all(value_ok(f, value(old, f), value(new, f), want) for f, want in expect.items())
    return dict(subtask=True, source=True, exact=exact)

def truth_expectation(before: Scene, after: Scene) -> tuple[str, dict]:
    "(target, expected values) of a true edit, for `judge_edit`."
    e = effect(before, after)
    _, target = edit_kind(e)
    if e["added"]: return target, dict(start=e["added"][0].start, end=e["added"][0].end)
    if not e["changed"]: return target, {}
    s = after[target]
    return target, {f: source_label(s) if f == "caption" else getattr(s, f) for f in e["changed"][target]}

# ---- chain of thought -------------------------------------------------------------------------------------------

def think(engine: ChatEngine, turns: list, answers: bool = False, previous: Scene | None = None,
          seconds: float | None = None) -> tuple[str, Scene | None]:
    """('scene', scene), ('words', None) for an answer in words, or ('invalid', None). `previous`: the scene an edit
    changes; `seconds`: the length the engine holds a scene to (the audio described, or the one an edit keeps)."""
    try: scene, _ = engine.think(turns, answers=answers, previous=previous, seconds=seconds)
    except ChatError: return "invalid", None
    return ("words", None) if scene is None else ("scene", scene)

def story_row(status: str, written, want: set, speakers: int, seconds: float | None) -> dict:
    "One story's figures; `seconds` None (no length asked) leaves the duration out of the share."
    row = dict(status=status, recall=0.0 if want else None, speakers=False, duration=False if seconds is not None else None)
    if written is not None:
        row.update(recall=len(want & set(labels(written, speech=False))) / len(want) if want else None,
                   speakers=speaker_count(written) == speakers,
                   duration=abs(written.duration - seconds) <= 1.0 if seconds is not None else None)
    return row

def assistant_turn(engine: ChatEngine, before: Scene | None, after: Scene, request: str, subtask: str | None, z) -> Turn:
    "The assistant's turn with scene `after` as the run was trained to write it (an edit as its change, or restated)."
    text, tool = assistant_plan(before, after, request, subtask, engine.edit_form)
    return Turn("assistant", text, audio=z, tool=tool)

def context(engine: ChatEngine, d: dict, j: int, request: str | None = None) -> list:
    "The true dialogue before turn `j` (requests, true scenes, codec latents of the true audio), then request j (or `request`)."
    turns = []
    for k in range(j):
        t = d["turns"][k]
        turns += [Turn("user", t["user"]), assistant_turn(engine, d["scenes"][k - 1] if k else None, d["scenes"][k], t["user"], t["subtask"], d["z"][k])]
    return turns + [Turn("user", d["turns"][j]["user"] if request is None else request)]

def absent_request(d: dict) -> str:
    "An edit request about a sound the story does not have (the right answer is a sentence saying so)."
    return missing_source_request(d["scenes"][0], random.Random(f"absent-{d['id']}"))[0]

def cot_rows(engine: ChatEngine, dialogues: list, bar) -> tuple[list, list]:
    "Story and edit rows of the split's dialogues under the engine's current grammar setting."
    stories, edits = [], []
    for d in dialogues:
        s0 = d["scenes"][0]
        status, w = think(engine, context(engine, d, 0))
        stories.append(story_row(status, w, set(labels(s0, speech=False)), speaker_count(s0),
                                 requested_seconds(d["turns"][0]["user"], None)))
        for j in range(1, len(d["turns"])):
            status, w = think(engine, context(engine, d, j), answers=engine.answers, previous=d["scenes"][j - 1],
                              seconds=d["scenes"][j - 1].duration)
            target, expect = truth_expectation(d["scenes"][j - 1], d["scenes"][j])
            sub = d["turns"][j]["subtask"]
            edits.append(dict(status=status, subtask_name=sub, **judge_edit(d["scenes"][j - 1], w, sub, target, expect)))
        if len(d["turns"]) > 1:  # the same story, then an edit of a sound it lacks: answered in words?
            status, _ = think(engine, context(engine, d, 1, absent_request(d)), answers=engine.answers, previous=d["scenes"][0])
            edits.append(dict(status=status, subtask_name="absent", subtask=None, source=None, exact=None))
        bar.update(1)
    return stories, edits

def share(rows, key) -> float | None:
    v = [r[key] for r in rows if r[key] is not None]
    return float(sum(v) / len(v)) if v else None

def summarize_stories(rows: list) -> dict:
    n = len(rows); c = Counter(r["status"] for r in rows)
    return dict(n=n, valid=c["scene"], invalid=c["invalid"], valid_share=c["scene"] / n if n else None,
                class_recall=share(rows, "recall"), speakers_share=share(rows, "speakers"), duration_share=share(rows, "duration"))

def words_figures(rows: list) -> dict:
    "Answers in words: their share on edits of absent sounds and on real edits, and the share answered the right way."
    absent, real = [r for r in rows if r["subtask_name"] == "absent"], [r for r in rows if r["subtask_name"] != "absent"]
    words = lambda rs: sum(r["status"] == "words" for r in rs)
    right = words(absent) + len(real) - words(real)
    return dict(absent=len(absent), words_on_absent=words(absent) / len(absent) if absent else None,
                words_on_real=words(real) / len(real) if real else None,
                words_right=right / (len(absent) + len(real)) if absent else None)

def summarize_edits(rows: list, per_subtask: bool = True) -> dict:
    if per_subtask:
        out = summarize_edits([r for r in rows if r["subtask_name"] != "absent"], None)
        return dict(out, refusal=words_figures(rows))
    n = len(rows); c = Counter(r["status"] for r in rows)
    out = dict(n=n, valid=c["scene"], words=c["words"], invalid=c["invalid"], valid_share=c["scene"] / n if n else None,
               subtask_share=share(rows, "subtask"), source_share=share(rows, "source"), exact_share=share(rows, "exact"))
    if per_subtask is None:  # the top level, real edits only: per subtask too
        names = dict.fromkeys(r["subtask_name"] for r in rows)
        out["subtasks"] = {k: summarize_edits([r for r in rows if r["subtask_name"] == k], False) for k in names}
    return out

def cot_figures(engine: ChatEngine, dialogues: list, progress: bool, grammars=(False, True)) -> dict:
    "The chain-of-thought figures with the grammar off and on (each decode is seeded alone, so either may be skipped)."
    out = {}
    for grammar in grammars:
        engine.grammar = grammar
        with tqdm(total=len(dialogues), desc=f"CoT, grammar {'on' if grammar else 'off'}", disable=not progress) as bar:
            stories, edits = cot_rows(engine, dialogues, bar)
        out[f"grammar_{'on' if grammar else 'off'}"] = dict(story=summarize_stories(stories), edit=summarize_edits(edits))
    engine.grammar = True
    return out

# ---- generalisation: hand-written requests ------------------------------------------------------------------------

def load_free_form(path, engine: ChatEngine, limit: int | None) -> dict:
    "The hand-written items, each base scene rendered by the tools and encoded by the run's codec."
    items = json.loads(Path(path).read_text())
    bases = {}
    for name, b in items["bases"].items():
        scene = Scene.from_dict(b["scene"])
        bases[name] = dict(request=b["request"], scene=scene, z=engine.encode(render(scene).mix, SAMPLE_RATE))
    return dict(stories=items["stories"][:limit], edits=items["edits"][:limit], bases=bases)

def free_form_rows(engine: ChatEngine, ff: dict, bar) -> tuple[list, list]:
    stories, edits = [], []
    for s in ff["stories"]:
        status, w = think(engine, [Turn("user", s["request"])])
        want = {f"sfx:{c}" for c in s["sfx"]} | ({f"music:{s['music']}"} if s.get("music") else set())
        stories.append(story_row(status, w, want, s["speakers"], s["seconds"])); bar.update(1)
    for e in ff["edits"]:
        b = ff["bases"][e["base"]]
        turns = [Turn("user", b["request"]), Turn("assistant", b["scene"].to_json(), audio=b["z"]), Turn("user", e["instruction"])]
        status, w = think(engine, turns, answers=engine.answers, previous=b["scene"], seconds=b["scene"].duration)
        edits.append(dict(status=status, subtask_name=e["subtask"], **judge_edit(b["scene"], w, e["subtask"], e["target"], e["expect"])))
        bar.update(1)
    return stories, edits

def free_form_figures(engine: ChatEngine, ff: dict, progress: bool) -> dict:
    out = dict(stories=len(ff["stories"]), edits=len(ff["edits"]))
    for grammar in (False, True):
        engine.grammar = grammar
        with tqdm(total=len(ff["stories"]) + len(ff["edits"]), desc=f"free-form, grammar {'on' if grammar else 'off'}",
                  disable=not progress) as bar:
            stories, edits = free_form_rows(engine, ff, bar)
        out[f"grammar_{'on' if grammar else 'off'}"] = dict(story=summarize_stories(stories), edit=summarize_edits(edits))
    engine.grammar = True
    return out

def held_out_figures(engine: ChatEngine, items: list, progress: bool) -> dict:
    "The story figures, grammar off and on, on requests in the held-out phrasing families (`held_out_stories` items)."
    ho = dict(stories=items, edits=[], bases={})
    out = dict(stories=len(items), families=list(HELD_OUT_FAMILIES))
    for grammar in (False, True):
        engine.grammar = grammar
        with tqdm(total=len(items), desc=f"held-out phrasings, grammar {'on' if grammar else 'off'}", disable=not progress) as bar:
            stories, _ = free_form_rows(engine, ho, bar)
        out[f"grammar_{'on' if grammar else 'off'}"] = dict(story=summarize_stories(stories))
    engine.grammar = True
    return out

def held_out_lines(h: dict) -> list:
    "The story rows of the table for the held-out phrasings."
    title = f"held-out phrasings ({h['stories']} stories: {', '.join(h['families'])})"
    return [r for r in cot_lines(title, {k: dict(h[k], edit=summarize_edits([])) for k in ("grammar_off", "grammar_on")})
            if not r[0].lstrip().startswith("edit")]

# ---- understanding ------------------------------------------------------------------------------------------------

def understanding_row(u: Scene | None, truth: Scene) -> dict:
    if u is None: return dict(valid=False)
    p, t = labels(u), labels(truth)
    w = tcpwer(to_seglst(truth), to_seglst(u))
    return dict(valid=True, speech_err=abs(n_kind(u, ("speech",)) - n_kind(truth, ("speech",))),
                sound_err=abs(n_kind(u, ("sfx", "music")) - n_kind(truth, ("sfx", "music"))),
                tp=sum((p & t).values()), fp=sum((p - t).values()), fn=sum((t - p).values()), errors=w.errors, words=w.length)

def summarize_understanding(rows: list) -> dict:
    ok = [r for r in rows if r["valid"]]
    total = lambda k: sum(r[k] for r in ok)
    tp, fp, fn, words = total("tp"), total("fp"), total("fn"), total("words")
    mean = lambda k: total(k) / len(ok) if ok else None
    return dict(n=len(rows), valid=len(ok), invalid=len(rows) - len(ok), valid_share=len(ok) / len(rows) if rows else None,
                speech_mae=mean("speech_err"), sound_mae=mean("sound_err"),
                f1=2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None, tcpwer=100.0 * total("errors") / words if words else None)

def understanding_figures(engine: ChatEngine, dialogues: list, progress: bool) -> dict:
    "The model's scene of each story's audio (as `engine.understand` does, grammar on), whole and cut to max_frames."
    engine.grammar, cut = True, engine.config.data.max_frames
    rows = dict(whole=[], cut=[])
    for d in tqdm(dialogues, desc="understanding", disable=not progress):
        z, truth = d["z"][0], d["scenes"][0]
        for key, audio, ref in (("whole", z, truth), ("cut", z[:cut], heard_scene(truth, min(cut, len(z)) / FRAME_RATE))):
            _, u = think(engine, [Turn("user", UNDERSTAND_PROMPT, audio=audio)], seconds=len(audio) / FRAME_RATE)
            rows[key].append(understanding_row(u, ref))
    return dict(cut_frames=cut, **{k: summarize_understanding(v) for k, v in rows.items()})

# ---- audio --------------------------------------------------------------------------------------------------------

def attempt(fn, *args):
    "fn(*args) as a finite float, None when it fails or is undefined (NaN)."
    try: v = fn(*args)
    except FAILURES: return None
    return float(v) if v is not None and math.isfinite(v) else None

def plan_vs_render(scorer, distance, audio, scene: Scene) -> dict:
    "multiFLAM of the model's audio and of the tools' rendering against the model's own scene; mel distance between them."
    try: mix = as_eval_audio(render(scene).mix, SAMPLE_RATE, scene.duration)
    except FAILURES: mix = None
    with torch.no_grad(): mel = None if mix is None else float(distance.mel(audio, mix))
    return dict(model=attempt(multiflam, scorer, audio, scene), tools=None if mix is None else attempt(multiflam, scorer, mix, scene), mel=mel)

def model_audio(engine: ChatEngine, d: dict, scorer, distance, plans: list) -> list:
    "The model's audio of every turn (tell, then edit its own audio), None after a failure; plan-vs-render rows."
    engine.reset(); rate, out = engine.codec.config.sample_rate, []
    for j, t in enumerate(d["turns"]):
        if j and out[-1] is None: out.append(None); continue
        try: reply = engine.tell(t["user"], seconds=t["duration"]) if j == 0 else engine.edit(t["user"])
        except FAILURES: out.append(None); continue
        if reply.audio is None: out.append(None); continue  # an answer in words
        out.append(as_eval_audio(reply.audio, rate, d["scenes"][j].duration))
        if reply.scene is not None: plans.append(plan_vs_render(scorer, distance, as_eval_audio(reply.audio, rate, reply.scene.duration), reply.scene))
    return out

def keep_error(distance: SpectralDistance, a, b, spans: list, rate: int = SAMPLE_RATE) -> float | None:
    """Mean |log-mel difference| of two audios of one scene over the frames outside `spans` (what an edit should keep),
    averaged over the distance's mel resolutions; None when no frame lies outside."""
    n = min(a.shape[-1], b.shape[-1])
    a, b = a[..., :n], b[..., :n]
    out = []
    with torch.no_grad():
        for mel in distance.mels:
            log = lambda x: torch.log10(mel(x).clamp(min=distance.floor))
            la, lb = log(a), log(b)  # (..., mels, frames)
            t = torch.arange(la.shape[-1]) * mel.hop_length / rate
            keep = torch.ones_like(t, dtype=torch.bool)
            for s, e in spans: keep &= (t < s) | (t > e)
            if keep.any(): out.append(float((la - lb).abs()[..., keep].mean()))
    return sum(out) / len(out) if out else None

# an edit is small when it changes little next to what stays, where the paper says copying the previous audio is most
# tempting: a few dB of loudness, a small pan or move, a short added sound (remove and replace change a whole sound)
SMALL_EDIT = dict(loudness_db=6.0, pan=0.8, start=2.0, added_seconds=2.0)

def edit_size(before: Scene, after: Scene) -> str:
    "'small' or 'large': the size of the true edit from `before` to `after` (SMALL_EDIT's bounds)."
    d = diff(before, after)
    if d.removed or len(d.added) + len(d.changed) != 1: return "large"
    if d.added:
        a = d.added[0]
        return "small" if a.end - a.start <= SMALL_EDIT["added_seconds"] else "large"
    (_, fields), = d.changed.items()
    if "caption" in fields or not set(fields) <= {"loudness_db", "pan", "start", "end"}: return "large"
    step = lambda f: abs(fields[f][1] - fields[f][0]) if f in fields else 0.0
    return "small" if all(step(f) <= SMALL_EDIT[f] for f in ("loudness_db", "pan", "start")) else "large"

def turn_scores(scorer, system: str, d: dict, audios: list, distance: SpectralDistance | None = None) -> list:
    rows = []
    for j, (scene, audio) in enumerate(zip(d["scenes"], audios)):
        row = dict(system=system, task="story" if j == 0 else "edit", subtask=d["turns"][j]["subtask"], ok=audio is not None)
        if j: row["size"] = edit_size(d["scenes"][j - 1], scene)
        if audio is not None and j == 0: row["multiflam"] = attempt(multiflam, scorer, audio, scene)
        elif audio is not None and audios[j - 1] is not None:
            args = (scorer, audios[j - 1], d["scenes"][j - 1], audio, scene)
            row.update(delta_multiflam=attempt(delta_multiflam, *args), editflam=attempt(editflam, *args))
            if distance is not None: row["keep"] = keep_error(distance, audios[j - 1], audio, edited_spans(d["scenes"][j - 1], scene))
        rows.append(row)
    return rows

def mean(rows, key) -> float | None:
    v = [r[key] for r in rows if r.get(key) is not None]
    return sum(v) / len(v) if v else None

def audio_summary(rows: list) -> dict:
    "Per system: story multiFLAM, edit Delta-multiFLAM and editFLAM (overall and per subtask), failed turns."
    out = {}
    for system in dict.fromkeys(r["system"] for r in rows):
        mine = [r for r in rows if r["system"] == system]
        story, edits = [r for r in mine if r["task"] == "story"], [r for r in mine if r["task"] == "edit"]
        stat = lambda rs: dict(n=len(rs), failed=sum(not r["ok"] for r in rs), delta_multiflam=mean(rs, "delta_multiflam"),
                               editflam=mean(rs, "editflam"), keep_error=mean(rs, "keep"))
        out[system] = dict(story=dict(n=len(story), failed=sum(not r["ok"] for r in story), multiflam=mean(story, "multiflam")),
                           edit=dict(stat(edits), subtasks={k: stat([r for r in edits if r["subtask"] == k]) for k in dict.fromkeys(r["subtask"] for r in edits)},
                                     sizes={k: stat([r for r in edits if r.get("size") == k]) for k in ("small", "large")}))
    return out

def ratios(summary: dict) -> dict:
    "The model's figures divided by the ground truth's and by the codec ceiling's (None where undefined)."
    flat = lambda s: {"story_multiflam": s["story"]["multiflam"], "delta_multiflam": s["edit"]["delta_multiflam"], "editflam": s["edit"]["editflam"],
                      "keep_error": s["edit"].get("keep_error"),
                      **{f"editflam_{k}": v["editflam"] for k, v in s["edit"]["subtasks"].items()},
                      **{f"keep_error_{k}": v.get("keep_error") for k, v in s["edit"]["subtasks"].items()}}
    m, out = flat(summary["model"]), {}
    for ref in ("truth", "codec"):
        r = flat(summary[ref])
        out[f"model_over_{ref}"] = {k: (m[k] / r[k] if m[k] is not None and r.get(k) not in (None, 0) else None) for k in m}
    return out

def audio_figures(engine: ChatEngine, dialogues: list, scorer, steps: int, progress: bool) -> dict:
    engine.steps, engine.grammar = steps, True
    distance, rows, plans = SpectralDistance(SAMPLE_RATE), [], []
    rate = engine.codec.config.sample_rate
    for d in tqdm(dialogues, desc="audio", disable=not progress):
        truth = [as_eval_audio(load_turn(t)[1], SAMPLE_RATE, s.duration) for t, s in zip(d["turns"], d["scenes"])]
        with torch.inference_mode(): codec = [as_eval_audio(engine.codec.reconstruct(a, SAMPLE_RATE), rate, s.duration) for a, s in zip(truth, d["scenes"])]
        for system, audios in (("truth", truth), ("codec", codec), ("model", model_audio(engine, d, scorer, distance, plans))):
            rows += turn_scores(scorer, system, d, audios, distance)
    summary = audio_summary(rows)
    plan = dict(n=len(plans), model_multiflam=mean(plans, "model"), tools_multiflam=mean(plans, "tools"), mel_distance=mean(plans, "mel"))
    return dict(steps=steps, systems=summary, **ratios(summary), plan_vs_render=plan)

# ---- learning curve -----------------------------------------------------------------------------------------------

def checkpoints(run: Path) -> list[Path]:
    "The run's complete checkpoint folders, in step order."
    found = [p for p in (run / "checkpoints").glob("step-*") if p.name[5:].isdigit() and (p / "model.safetensors").exists()]
    return sorted(found, key=lambda p: int(p.name[5:]))

def curve_figures(engine: ChatEngine, run: Path, dialogues: list, progress: bool) -> list:
    "The chain-of-thought and understanding figures at every checkpoint (the engine's own weights restored after)."
    latest, points = engine.model, []
    try:
        for ck in tqdm(checkpoints(run), desc="checkpoints", disable=not progress):
            engine.model = AudioChatModel.load(ck, engine.device).eval()
            points.append(dict(step=int(ck.name[5:]), cot=cot_figures(engine, dialogues, False),
                               understanding=understanding_figures(engine, dialogues, False)))
    finally: engine.model = latest
    return points

CURVES = [("CoT", "story valid, grammar off", ("cot", "grammar_off", "story", "valid_share")),
          ("CoT", "edit valid, grammar off", ("cot", "grammar_off", "edit", "valid_share")),
          ("CoT", "story class recall, grammar on", ("cot", "grammar_on", "story", "class_recall")),
          ("CoT", "story length within 1 s, grammar on", ("cot", "grammar_on", "story", "duration_share")),
          ("CoT", "edit exact, grammar on", ("cot", "grammar_on", "edit", "exact_share")),
          ("understanding", "valid, whole", ("understanding", "whole", "valid_share")),
          ("understanding", "class/speaker F1, whole", ("understanding", "whole", "f1")),
          ("understanding", "class/speaker F1, first frames", ("understanding", "cut", "f1"))]

def dig(d, keys):
    for k in keys: d = None if d is None else d.get(k)
    return d

def plot_curve(points: list, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, panel in zip(axes, ("CoT", "understanding")):
        for p, label, keys in CURVES:
            if p != panel: continue
            xy = [(q["step"], dig(q, keys)) for q in points if dig(q, keys) is not None]
            if xy: ax.plot(*zip(*xy), marker="o", label=label)
        ax.set(title=panel, xlabel="training step", ylabel="share / F1", ylim=(-0.02, 1.02)); ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]: ax.legend(fontsize=8)
    fig.tight_layout(); fig.savefig(path, dpi=100); plt.close(fig)
    return path

# ---- the table ----------------------------------------------------------------------------------------------------

def fmt(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"

def frac(s: dict, key: str = "valid") -> str:
    return f"{s[key]}/{s['n']} ({fmt(s['valid_share'] * 100 if s['n'] else None, 0)}%)"

def cot_lines(title: str, c: dict) -> list:
    off, on = c.get("grammar_off"), c["grammar_on"]  # --grammar on: no figures without the grammar
    lines = [(title, "grammar off", "grammar on")]
    pair = lambda f: ["  " + f[0], f[1](off) if off else "-", f[1](on)]
    rows = [("story: valid scenes", lambda g: frac(g["story"])),
            ("story: recall of the requested sound classes", lambda g: fmt(g["story"]["class_recall"])),
            ("story: speaker count right (share)", lambda g: fmt(g["story"]["speakers_share"])),
            ("story: length within 1 s (share)", lambda g: fmt(g["story"]["duration_share"])),
            ("edit: valid scenes", lambda g: frac(g["edit"]) + f", {g['edit']['words']} in words"),
            ("edit: right subtask / right source / exact", lambda g: " / ".join(fmt(g["edit"][k]) for k in ("subtask_share", "source_share", "exact_share"))),
            ("edit in words: when absent / on real edits / right", lambda g: " / ".join(fmt(g["edit"].get("refusal", {}).get(k)) for k in ("words_on_absent", "words_on_real", "words_right")))]
    lines += [tuple(pair(r)) for r in rows]
    for k in on["edit"].get("subtasks", {}):
        lines.append((f"  edit exact: {k} (n={on['edit']['subtasks'][k]['n']})", fmt(off["edit"]["subtasks"][k]["exact_share"]) if off else "-",
                      fmt(on["edit"]["subtasks"][k]["exact_share"])))
    return lines

def understanding_lines(u: dict) -> list:
    w, c = u["whole"], u["cut"]
    lines = [("understanding (grammar on)", "whole story", f"first {u['cut_frames']} frames")]
    for label, f in (("valid scenes", frac), ("mean |#speech - true|", lambda s: fmt(s["speech_mae"])),
                     ("mean |#sounds+music - true|", lambda s: fmt(s["sound_mae"])), ("class/speaker micro F1", lambda s: fmt(s["f1"])),
                     ("tcpWER %", lambda s: fmt(s["tcpwer"], 1))):
        lines.append(("  " + label, f(w), f(c)))
    return lines

def audio_lines(a: dict) -> list:
    s, mt, mc = a["systems"], a["model_over_truth"], a["model_over_codec"]
    lines = [(f"audio ({a['steps']} steps)", "model", "truth", "codec", "model/truth", "model/codec")]
    get = {"story_multiflam": lambda x: x["story"]["multiflam"], "delta_multiflam": lambda x: x["edit"]["delta_multiflam"],
           "editflam": lambda x: x["edit"]["editflam"], "keep_error": lambda x: x["edit"].get("keep_error")}
    get |= {f"editflam_{k}": (lambda x, k=k: x["edit"]["subtasks"].get(k, {}).get("editflam")) for k in s["model"]["edit"]["subtasks"]}
    get |= {f"keep_error_{k}": (lambda x, k=k: x["edit"]["subtasks"].get(k, {}).get("keep_error")) for k in s["model"]["edit"]["subtasks"]}
    names = {"story_multiflam": "story multiFLAM", "delta_multiflam": "Delta-multiFLAM (lower is better)", "editflam": "editFLAM",
             "keep_error": "keep error outside the edited span (lower)"}
    short = lambda k: k.replace("editflam_", "editFLAM: ").replace("keep_error_", "keep error: ")
    for k, g in get.items():
        digits = 3 if k.startswith("keep_error") else 1
        lines.append(("  " + names.get(k, short(k)), *(fmt(g(s[x]), digits) for x in ("model", "truth", "codec")), fmt(mt.get(k)), fmt(mc.get(k))))
    m = s["model"]
    lines.append(("  failed turns: story, edits", f"{m['story']['failed']}/{m['story']['n']}, {m['edit']['failed']}/{m['edit']['n']}"))
    p = a["plan_vs_render"]
    lines += [(f"plan vs render ({p['n']} model scenes)", "model audio", "tools render", "mel distance"),
              ("  multiFLAM against the model's own scene", fmt(p["model_multiflam"], 1), fmt(p["tools_multiflam"], 1), fmt(p["mel_distance"]))]
    return lines

def table(result: dict) -> str:
    lines = []
    if result["cot"]: lines += cot_lines(f"chain of thought ({result['dialogues']} dialogues)", result["cot"])
    if result["free_form"]:
        ff = result["free_form"]
        lines += cot_lines(f"free-form requests ({ff['stories']} stories, {ff['edits']} edits)", ff)
    if result.get("held_out"): lines += held_out_lines(result["held_out"])
    if result["understanding"]: lines += understanding_lines(result["understanding"])
    if result["audio"]: lines += audio_lines(result["audio"])
    width = max(len(r[0]) for r in lines) + 2
    cols = max(len(r) for r in lines) - 1
    w2 = [max((len(r[i]) for r in lines if len(r) > i), default=0) + 2 for i in range(1, cols + 1)]
    return "\n".join(r[0].ljust(width) + "".join(v.rjust(w) for v, w in zip(r[1:], w2)) for r in lines)

# ---- main ---------------------------------------------------------------------------------------------------------

def parse_args(argv):
    p = argparse.ArgumentParser(prog="learning.py", description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, help="a training run folder (audiochat train --run.out=DIR)")
    p.add_argument("--split", default="storygen-eval-mini", help="a built split folder, or storygen-eval-mini (built and cached)")
    p.add_argument("--dialogues", type=int, default=20, help="the first N dialogues of the split (default 20)")
    p.add_argument("--audio", action=argparse.BooleanOptionalAction, default=True, help="the audio figures (default on)")
    p.add_argument("--grammar", choices=["both", "on"], default="both",
                   help="the chain-of-thought figures without and with the scene grammar, or with it only (default both)")
    p.add_argument("--understanding", action=argparse.BooleanOptionalAction, default=True,
                   help="the understanding figures (default on)")
    p.add_argument("--steps", type=int, default=10, help="diffusion steps for the audio (default 10)")
    p.add_argument("--curve", action="store_true", help="also every checkpoint's text figures: learning_curve.png")
    p.add_argument("--free-form", default=str(FREE_FORM), help="the hand-written requests and edits ('' to skip)")
    p.add_argument("--free-form-items", type=int, default=None, help="use only the first N stories and N edits")
    p.add_argument("--held-out", type=int, default=20, help="story requests in the held-out phrasing families (0 to skip)")
    p.add_argument("--max-tokens", type=int, default=768, help="longest chain of thought in tokens (default 768)")
    p.add_argument("--scorer", default=None, help="a saved TinyFLAM folder (default: the cached scorer, trained if missing)")
    p.add_argument("--codec", default=None, help="the codec folder (default: the run's data.codec)")
    p.add_argument("--out", default=None, help="the JSON figures (default RUN/learning.json); the curve is saved beside it")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    for k in ("dialogues", "steps", "max_tokens", "threads"):
        if getattr(a, k) < 1: p.error(f"--{k.replace('_', '-')} must be at least 1")
    return a

def prepare(engine: ChatEngine, split: Path, n: int, progress: bool) -> list:
    "The first `n` dialogues: requests, true scenes and the codec latents of every turn's audio (encoded once)."
    records = [r for _, r in zip(range(n), read_records(split))]
    if not records: raise ValueError(f"no dialogues in {split}")
    return [dict(id=r["id"], turns=r["turns"], scenes=[Scene.from_dict(t["scene"]) for t in r["turns"]],
                 z=[engine.encode(t["audio"]) for t in r["turns"]]) for r in tqdm(records, desc="encode", disable=not progress)]

def evaluate_run(a) -> dict:
    run, progress, t0 = Path(a.run), not a.quiet, time.perf_counter()
    if not run.is_dir(): raise FileNotFoundError(f"run folder not found: {run}")
    split = resolve_split(a.split, progress=progress)
    engine = ChatEngine.load(run, a.codec, retries=0, max_new_tokens=a.max_tokens, steps=a.steps)
    dialogues = prepare(engine, split, a.dialogues, progress)
    out = dict(run=str(run), split=str(split), dialogues=len(dialogues), thinks=engine.thinks, answers=engine.answers,
               arch=engine.model.config.arch, steps=a.steps, max_tokens=a.max_tokens, tolerance=TOLERANCE,
               cot=None, free_form=None, understanding=None, audio=None, curve=None, seconds={})
    def timed(key, fn):
        t = time.perf_counter(); v = fn(); out["seconds"][key] = round(time.perf_counter() - t, 2); return v
    if engine.thinks:
        grammars = (False, True) if a.grammar == "both" else (True,)
        out["cot"] = timed("cot", lambda: cot_figures(engine, dialogues, progress, grammars))
        if a.free_form:
            ff = load_free_form(a.free_form, engine, a.free_form_items)
            out["free_form"] = timed("free_form", lambda: free_form_figures(engine, ff, progress))
        if a.held_out > 0:
            out["held_out"] = timed("held_out", lambda: held_out_figures(engine, held_out_stories(a.held_out), progress))
        if a.understanding:
            out["understanding"] = timed("understanding", lambda: understanding_figures(engine, dialogues, progress))
    if a.audio:
        scorer = load_scorer(a.scorer)
        out["audio"] = timed("audio", lambda: audio_figures(engine, dialogues, scorer, a.steps, progress))
    if a.curve and engine.thinks: out["curve"] = timed("curve", lambda: curve_figures(engine, run, dialogues, progress))
    out["seconds"]["total"] = round(time.perf_counter() - t0, 2)
    out["seconds"]["per_dialogue"] = round(out["seconds"]["total"] / len(dialogues), 2)
    return out

def main(argv=None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    try: result = evaluate_run(a)
    except (FileNotFoundError, ValueError, OSError) as e:  # a missing or unusable run, split, scorer or free-form file
        if os.environ.get("AUDIOCHAT_DEBUG"): raise
        print(f"learning.py: error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2
    out = Path(a.out) if a.out else Path(a.run) / "learning.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    if result["curve"]: result["curve_figure"] = str(plot_curve(result["curve"], out.with_name("learning_curve.png")))
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    if not result["thinks"]: print("this run has no chain of thought: audio figures only")
    print(f"{result['dialogues']} dialogues in {result['seconds']['total']:.0f} s ({result['seconds']['per_dialogue']:.1f} s per dialogue); "
          f"figures in {out}" + (f", curve in {result['curve_figure']}" if result.get("curve_figure") else ""))
    return 0

if __name__ == "__main__":
    sys.exit(main())
