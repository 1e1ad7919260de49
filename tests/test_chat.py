"""Chat engine: loading a trained run, tell / edit / understand end to end, the scene grammar, greedy decoding against
generate_text, bounded retries with the raw text in the error, the terminal commands."""
import io
import json

import pytest
import torch

from audiochat.cli import main
from audiochat.core.audio import save_audio
from audiochat.core.scene import Scene
from audiochat.model.forcing import Turn
from audiochat.model.grammar import Decoded, SceneGrammar, decode_text, token_pieces
from audiochat.serve.chat import ChatEngine
from audiochat.serve.replies import ChatError
from audiochat.training.train import train_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    # no examples answered in words here: these tests need every edit to make audio
    return train_tiny_run(tmp_path_factory.mktemp("chat") / "run", steps=3, overrides=["--data.refusals=0"])


def test_grammar_accepts_canonical_scenes_and_rejects_others():
    g = SceneGrammar()
    s = Scene.from_json('{"duration":6.5,"sources":[{"id":"s1","kind":"speech","speaker":"girl","emotion":"happy","text":"Hello there.",'
                        '"start":0.5,"end":2,"loudness_db":-20.5,"pan":-0.3},{"id":"fx1","kind":"sfx","caption":"rain","start":0,"end":6.5}]}')
    text = s.to_json().encode()
    assert g.complete(text) and all(g.viable(text[:i]) for i in range(len(text)))
    for bad in (b'{"duration":4,"sources":[{"id":"a","kind":"sfx","caption":"x","start":2,"end":1}]}',  # end before start
                b'{"duration":4,"sources":[{"id":"a","kind":"sfx","caption":"x","start":0,"end":5}]}',  # past the duration
                b'{"duration":4,"sources":[{"id":"a","kind":"speech","caption":"x","start":0,"end":1}]}',  # speech needs speaker
                b'{"duration":4,"sources":[{"id":"a","kind":"sfx","caption":"x","start":0,"end":1,"loudness_db":-70}]}',
                b'{"duration":0,"sources":[]}'):
        assert not g.complete(bad)
        with pytest.raises(ValueError): Scene.from_json(bad.decode())
    # a number that can no longer reach a valid value is cut at once (no dead ends later)
    assert not g.viable(b'{"duration":78,"sources":[{"id":"a","kind":"sfx","caption":"x","start":48.37,"end":8')


def test_grammar_accepts_every_training_scene():
    "Random scenes of the tokenizer corpus and the sample dialogues' scenes: complete, and every prefix viable."
    import random

    from audiochat.model.tokenizer import random_scene
    from audiochat.sim.data import DATA_SAMPLES
    g = SceneGrammar()
    scenes = [random_scene(random.Random(i)) for i in range(100)]
    for f in (DATA_SAMPLES / "dialogues").glob("*/records.jsonl"):
        scenes += [Scene.from_dict(t["scene"]) for line in f.read_text().splitlines() for t in json.loads(line)["turns"]]
    assert len(scenes) > 100
    for s in scenes:
        text = s.to_json().encode()
        assert g.complete(text), text
        assert all(g.viable(text[:i]) for i in range(0, len(text), 7)), text


def test_token_pieces_are_the_tokens_bytes(run):
    e = ChatEngine.load(run)
    ids = e.tokenizer.encode('{"duration":2,"sources":[{"id":"fx1","kind":"sfx","caption":"rain é"}', add_special_tokens=False)
    pieces = token_pieces(e.tokenizer)
    assert b"".join(pieces[i] for i in ids).decode() == e.tokenizer.decode(ids)
    assert pieces[e.ids["audio_start"]] is None


def test_greedy_decoding_matches_generate_text(run):
    e = ChatEngine.load(run)
    tokens, latents, layout = e._context([Turn("user", "Rain on a roof.")])
    ref = e.model.generate_text(tokens, 12)[0, tokens.shape[1]:].tolist()
    assert decode_text(e.model, tokens, max_new_tokens=12).ids == ref
    # a context with audio goes through the full model with a cache: same tokens as without a cache
    ctx = e._context([Turn("user", "Describe.", audio=torch.randn(5, e.model.config.latent_dim))])
    got = decode_text(e.model, *ctx, max_new_tokens=4).ids
    toks, lat, lay = ctx
    for i in got:
        from audiochat.model.transformer import Layout
        out = e.model(toks, lat, torch.zeros(toks.shape), lay).text_logits
        assert int(out[0, -1].argmax()) == i
        toks = torch.cat([toks, torch.tensor([[i]])], 1); lat = torch.cat([lat, torch.zeros(1, 1, lat.shape[-1])], 1)
        lay = Layout(*(torch.cat([getattr(lay, f), getattr(lay, f)[:, -1:]], 1) for f in ("modality", "span", "document", "pad", "isolated")))


def test_tell_edit_understand_end_to_end(run, tmp_path):
    e = ChatEngine.load(run, steps=3, cfg_scale=2.0)
    r = e.tell("A short story: a bell rings in the rain.")
    assert Scene.from_json(r.cot) == r.scene
    assert r.scene.duration <= e.max_seconds and r.latents.shape == (round(r.scene.duration * 40), e.model.config.latent_dim)
    assert r.audio.shape[0] == 2 and r.audio.shape[1] == r.latents.shape[0] * e.codec.hop and torch.isfinite(r.audio).all()
    t = r.timings
    assert t.diffusion_steps == 2 * 3 and t.cot_tokens > 0 and t.tokens_per_s > 0 and t.decode_seconds > 0
    r2 = e.edit("Make the bell quieter.")
    assert r2.task == "edit" and len(e.history) == 4 and e.history[1].audio is r.latents
    path = save_audio(tmp_path / "in.wav", r.audio, e.codec.config.sample_rate)
    r3 = e.edit("Add wind.", audio=path)
    assert e.history[4].audio is not None and r3.audio is not None
    u = e.understand(path)
    assert u.audio is None and isinstance(u.scene, Scene)
    e.reset(); assert e.history == [] and e.replies == []


def test_bad_input(run, tmp_path):
    e = ChatEngine.load(run, steps=2)
    with pytest.raises(ValueError, match="empty"): e.tell(" ")
    with pytest.raises(ValueError, match="nothing to edit"): e.edit("louder")
    with pytest.raises(ValueError, match="max_seconds"): e.understand(torch.zeros(2, 16000 * 31), 16000)
    with pytest.raises(FileNotFoundError, match="run folder not found"): ChatEngine.load(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoints"): ChatEngine.load(tmp_path / "empty")
    # mono audio at another rate is converted by the codec
    assert e.understand(torch.zeros(1, 8000) + 0.01, 8000).scene is not None


def test_invalid_cot_is_retried_then_reported_with_raw_text(run):
    e = ChatEngine.load(run, grammar=False, retries=2, max_new_tokens=1)  # no token is a whole scene
    with pytest.raises(ChatError, match="after 3 attempts") as info:
        e.tell("A story.")
    assert isinstance(info.value.raw, str) and len(e.history) == 0  # the raw text may be empty (a stop token first)


def test_cli_tell_edit_understand_chat(run, tmp_path, capsys):
    out = tmp_path / "story.wav"
    assert main(["tell", "rain and a bell", "-o", str(out), "--run", str(run), "--steps", "2"]) == 0
    assert out.exists() and Scene.from_json(out.with_suffix(".json").read_text())
    assert main(["edit", str(out), "make it louder", "-o", str(tmp_path / "edit.wav"), "--run", str(run), "--steps", "2"]) == 0
    assert (tmp_path / "edit.wav").exists()
    seg = tmp_path / "u.json"
    assert main(["understand", str(out), "--run", str(run), "-o", str(seg)]) == 0
    assert isinstance(json.loads(seg.read_text()), list)
    printed = capsys.readouterr().out
    assert "who / what" in printed and "tokens/s" in printed
    assert main(["understand", str(tmp_path / "missing.wav"), "--run", str(run)]) == 1
    assert "audio file not found" in capsys.readouterr().err
    from audiochat.serve.ui import chat_main
    assert chat_main(["--run", str(run), "--steps", "2", "--out", str(tmp_path / "chat")], io.StringIO("rain\nlouder\n/reset\n/understand nothing.wav\n/quit\n")) == 0
    assert sorted(p.name for p in (tmp_path / "chat").glob("*.wav")) == ["turn-01.wav", "turn-02.wav"]
    assert "error: audio file not found" in capsys.readouterr().out


def test_chat_panel_renders_the_edited_plan(run):
    from audiochat.serve.ui import ChatPanel
    panel = ChatPanel(ChatEngine.load(run, steps=2))
    panel.render()
    assert "Plan first" in panel.status.value
    panel.plan()
    assert "type a request" in panel.status.value
    panel.request.value = "rain"
    panel.plan()
    assert Scene.from_json(panel.cot.value) and not panel.render_button.disabled
    panel.cot.value = '{"duration":0.5,"sources":[{"id":"b","kind":"sfx","caption":"bell","start":0,"end":0.5}]}'
    r = panel.render()
    assert r.latents.shape[0] == 20 and panel.engine.history[-1].text == r.scene.to_json() and panel.render_button.disabled
    panel.request.value = "louder"; panel.plan(); panel.cot.value = '{"duration":1}'
    assert panel.render() is None and "not valid" in panel.status.value and len(panel.engine.replies) == 1


@pytest.mark.slow
def test_demo_report_renders_in_headless_chromium(run, tmp_path):
    "The demo report with a chat opens in headless Chromium; the screenshot shows the page (players and figures)."
    import shutil
    import subprocess

    from audiochat.eval.demo import demo
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None: pytest.skip("chromium is not installed (apt-get install chromium)")
    paths = demo(tmp_path / "demo", run=run, steps=4)
    page = paths["report"].read_text()
    assert page.count("<audio controls") == 4 and page.count("<img") == 4 and page.count("<section>") == 5
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1000,1600", paths["report"].as_uri()],
                   check=True, timeout=120, capture_output=True)
    from PIL import Image
    img = Image.open(shot)
    assert img.size == (1000, 1600)
    colours = img.convert("RGB").getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 500  # text, players and spectrograms, not a blank page


def test_grammar_takes_utf8_escapes_and_answers_only_for_edits():
    from audiochat.model.grammar import EDIT_GRAMMAR, answer_text
    s = Scene.from_json('{"duration":3,"sources":[{"id":"s1","kind":"speech","speaker":"girl","text":"Ça va? \\"Sí\\" 日本","start":0,"end":2}]}')
    text, g, edit = s.to_json().encode(), SceneGrammar(), SceneGrammar(EDIT_GRAMMAR)
    assert g.complete(text) and all(g.viable(text[:i]) for i in range(len(text)))
    answer = b'{"answer":"There is no thunder in this story, so I left it unchanged."}'
    assert edit.complete(answer) and all(edit.viable(answer[:i]) for i in range(len(answer))) and edit.complete(text)
    assert not g.viable(answer[:4]) and not edit.complete(b'{"answer":""}') and not edit.viable(b'{"answer":"a","x"')
    assert answer_text(answer.decode()) == "There is no thunder in this story, so I left it unchanged."
    assert answer_text(text.decode()) is None and answer_text("not json") is None and answer_text('{"answer":1}') is None


def test_an_edit_answered_in_words_makes_no_audio(run, tmp_path, capsys, monkeypatch):
    e = ChatEngine.load(run, steps=2)
    story = e.tell("A story with rain.")
    assert story.audio is not None and story.message is None
    words = '{"answer":"There is no thunder in this story."}'
    monkeypatch.setattr(ChatEngine, "think", lambda self, turns, timings=None, answers=False, previous=None, seconds=None: (None, words))
    r = e.edit("Make the thunder louder by 6 dB.")
    assert r.message == "There is no thunder in this story." and r.scene is None and r.audio is None and r.latents is None
    assert e.history[-1].text == r.cot and e.history[-1].audio is None and len(e.history) == 4
    out = tmp_path / "story.wav"
    save_audio(out, story.audio, e.codec.config.sample_rate)
    assert main(["edit", str(out), "Remove the church bell.", "-o", str(tmp_path / "edit.wav"), "--run", str(run), "--steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert "the model answered" in printed and "nothing written" in printed and not (tmp_path / "edit.wav").exists()


def test_a_reply_never_outlasts_its_audio(run, monkeypatch):
    "The grammar bounds the duration by max_seconds; without it a longer scene is rejected, never cut."
    e = ChatEngine.load(run, steps=2, max_seconds=1.5, default_seconds=1.0)
    r = e.tell("A long story about a storm at sea.")
    assert r.scene.duration <= 1.5 and r.latents.shape[0] == round(r.scene.duration * 40)
    assert r.audio.shape[1] == r.latents.shape[0] * e.codec.hop
    long_scene = '{"duration":69,"sources":[{"id":"fx1","kind":"sfx","caption":"steady rain falling","start":0,"end":69}]}'
    import audiochat.serve.chat as chat
    monkeypatch.setattr(chat, "decode_text", lambda *a, **k: Decoded([1], long_scene, 0.01, True))
    free = ChatEngine.load(run, steps=2, grammar=False, retries=1)
    with pytest.raises(ChatError, match="not between one frame and max_seconds"): free.tell("A 69-second story.")
    with pytest.raises(ValueError, match="max_seconds"): ChatEngine.load(run, max_seconds=200)


@pytest.mark.parametrize("arch", ["sct", "dit"])
def test_models_without_cot(run, tmp_path, arch):
    r_dir = train_tiny_run(tmp_path / arch, steps=2, codec_dir=run / "codec", overrides=["--data.cot=false", f"--model.arch={arch}"])
    e = ChatEngine.load(r_dir, steps=2, default_seconds=1.0)
    assert not e.thinks
    r = e.tell("Rain and a bell.")
    assert r.scene is None and r.cot == "Here is the audio." and r.latents.shape[0] == 40 and r.audio.shape[0] == 2
    assert e.edit("Louder rain.").latents.shape[0] == 40
    assert e.tell("Wind.", seconds=0.5).latents.shape[0] == 20
    with pytest.raises(ValueError, match="without a chain of thought"): e.understand(r.audio, e.codec.config.sample_rate)


def test_the_engine_grammar_never_dead_ends(run):
    "Random choices among the allowed tokens always reach a complete, valid scene within max_seconds."
    import random
    e = ChatEngine.load(run, max_seconds=20, default_seconds=5)
    for seed in range(6):
        rng, text = random.Random(seed), b""
        for _ in range(4000):
            order = rng.sample(range(len(e.pieces)), len(e.pieces))
            nxt = next((i for i in order if e.pieces[i] is not None and e.scene_grammar.viable(text + e.pieces[i])), None)
            if nxt is None or (e.scene_grammar.complete(text) and rng.random() < 0.5): break
            text += e.pieces[nxt]
        assert e.scene_grammar.complete(text), text
        scene = Scene.from_json(text.decode())
        assert scene.duration <= 20 and all(s.id[:1] in "sfm" for s in scene.sources)


def test_a_plan_changed_before_rendering(run):
    "plan() adds nothing to the conversation; render_plan() renders the scene it is given, exactly as long as that scene."
    e = ChatEngine.load(run, steps=2)
    p = e.plan("A story about rain.")
    assert p.task == "tell" and isinstance(p.scene, Scene) and e.history == [] and e.replies == []
    mine = Scene.from_json('{"duration":0.75,"sources":[{"id":"fx1","kind":"sfx","caption":"steady rain","start":0,"end":0.75}]}')
    r = e.render_plan(p, mine)
    assert r.scene == mine and r.cot == mine.to_json() and r.latents.shape[0] == 30 and len(e.history) == 2
    assert r.audio.shape[1] == 30 * e.codec.hop and e.replies == [r]
    assert e.plan("Make the rain louder.").task == "edit"
    with pytest.raises(ValueError, match="empty"): e.plan("  ")
    from audiochat.serve.replies import Plan, Timings
    words = Plan("edit", "Remove the dog.", Turn("user", "Remove the dog."), None, '{"answer":"No dog here."}', Timings(), "No dog here.")
    with pytest.raises(ValueError, match="no scene to render"): e.render_plan(words)


def test_an_edit_is_written_as_its_change_and_applied_in_code(run):
    "The diff form: the reply's edit applied to the previous scene is the reply's scene, which enters as a tool result."
    from audiochat.core.edits import Edit
    e = ChatEngine.load(run, steps=2)
    assert e.edit_form == "diff"
    story = e.tell("A story with rain and a bell.")
    r = e.edit("Make the rain louder by 6 dB.")
    assert isinstance(r.edit, Edit) and Edit.from_json(r.cot) == r.edit and r.scene == story.scene.apply(r.edit)
    assert e.history[-1].text == r.cot and e.history[-1].tool == r.scene.to_json() and e.scene == r.scene
    assert r.latents.shape[0] == round(r.scene.duration * 40) and r.audio.shape[1] == r.latents.shape[0] * e.codec.hop
    p = e.plan("Remove the bell.")
    assert p.previous == r.scene
    if p.scene is not None:  # render a scene changed by hand: the change written is the one that gives it
        mine = Scene(p.previous.sources[1:], p.previous.duration)
        r2 = e.render_plan(p, mine)
        assert r2.scene == mine and p.previous.apply(r2.edit) == mine and e.history[-1].tool == mine.to_json()


def test_the_scene_form_restates_the_whole_scene(run, tmp_path):
    r_dir = train_tiny_run(tmp_path / "scene-form", steps=2, codec_dir=run / "codec", overrides=["--data.edit_form=scene", "--data.refusals=0"])
    e = ChatEngine.load(r_dir, steps=2)
    assert e.edit_form == "scene"
    e.tell("Rain.")
    r = e.edit("Remove the rain.")
    assert r.edit is None and Scene.from_json(r.cot) == r.scene and e.history[-1].tool == ""


def test_understanding_describes_exactly_the_audio_given(run):
    "The grammar holds the described scene to the length of the audio (a 2 s file is not answered with an 8 s scene)."
    e = ChatEngine.load(run, steps=2)
    sr = e.codec.config.sample_rate
    for seconds in (0.5, 2.0):
        u = e.understand(torch.zeros(2, int(seconds * sr)), sr)
        assert u.scene.duration == seconds and all(s.end <= seconds for s in u.scene.sources)


def test_a_model_that_reads_its_plan_tells_and_edits(tmp_path):
    "plan_features on: training batches carry each frame's scene, and the engine gives the scene it renders to the model."
    from audiochat.model.forcing import PLAN_FEATURES
    run = train_tiny_run(tmp_path / "planned", steps=2, overrides=["--data.refusals=0", f"--model.plan_features={PLAN_FEATURES}"])
    e = ChatEngine.load(run, steps=2)
    assert e.model.config.plan_features == PLAN_FEATURES
    r = e.tell("A short story: a bell rings in the rain.")
    assert r.latents.shape == (round(r.scene.duration * 40), e.model.config.latent_dim)
    assert e.history[-1].plan.shape == (r.latents.shape[0], PLAN_FEATURES)
    r2 = e.edit("Make the bell quieter.")
    assert r2.task == "edit" and all(t.plan is not None for t in e.history if t.role == "assistant" and t.audio is not None)


def test_the_shipped_model_tells_edits_and_understands(tmp_path, capsys):
    "The bundle committed with the package: small, loaded by default, answers the three jobs with outputs of the right shapes."
    from audiochat.serve.chat import SHIPPED_MODEL
    from audiochat.sim.data import DATA_SAMPLES
    files = [p for p in SHIPPED_MODEL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 10 * 2**20 and json.loads((SHIPPED_MODEL / "bundle.json").read_text())["dtype"] == "float16"
    assert "learning.json" in {p.name for p in files} and "## Learning benchmark" in (SHIPPED_MODEL / "README.md").read_text()
    e = ChatEngine.from_pretrained(steps=2)  # the default: the shipped model
    assert e.thinks and e.model.config.arch == "sct"
    r = e.tell("A 3-second story: a dog barks in the rain.")
    assert Scene.from_json(r.cot) == r.scene
    assert r.latents.shape == (round(r.scene.duration * 40), e.model.config.latent_dim) and r.audio.shape[1] == r.latents.shape[0] * e.codec.hop
    r2 = e.edit("Make the dog quieter.")
    assert (r2.scene is None) == (r2.audio is None) and (r2.scene is not None or r2.message)
    if r2.scene is not None: assert r2.latents.shape[0] == round(r2.scene.duration * 40)
    sample = Scene.from_json((DATA_SAMPLES / "demo" / "scene.json").read_text())
    from audiochat.sim.tools import render
    u = e.understand(render(sample).mix, 16000)
    assert isinstance(u.scene, Scene) and u.audio is None
    assert main(["tell", "A story: rain.", "-o", str(tmp_path / "s.wav"), "--steps", "2"]) == 0  # --run defaults to it
    assert (tmp_path / "s.wav").exists() and (tmp_path / "s.json").exists()


def test_understanding_hears_the_audio_alone(run):
    "As in training, the model describes audio at the start of a dialogue: earlier turns do not change what it hears."
    e = ChatEngine.load(run, steps=2)
    x = torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)) * 0.1
    fresh = e.understand(x, 16000).cot
    e.reset(); e.tell("A story with rain.")
    after = e.understand(x, 16000)
    assert after.cot == fresh and len(e.history) == 4
    assert e.scene == after.scene  # an edit now changes the scene heard
