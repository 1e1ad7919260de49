"""Training: config overrides and errors, schedule, data stream, exact resume, NaN skipping, atomic no-pickle
checkpoints, DDP equivalence (gloo), and the `audiochat train` command on the sample dialogues."""
import dataclasses
import json
import math
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import audiochat.runs.checkpoints as CT
import audiochat.training.streams as ST
import audiochat.training.train as T
from audiochat.model.forcing import LossOutput
from audiochat.runs.config import load_config, resolve, save_config
from audiochat.sim.copilot import NO_COT_TEXT, UNDERSTAND_PROMPT, heard_scene
from audiochat.sim.data import read_records
from audiochat.training.run_data import prepare_data

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples" / "dialogues"
SMALL = ["--model.d_model=32", "--model.n_layers=2", "--model.n_gen_layers=1", "--model.n_heads=2", "--model.n_kv_heads=1",
         "--data.synthetic_dialogues=24", "--data.eval_dialogues=2", "--data.batch_size=2", "--data.max_frames=12",
         "--data.max_turns=2", "--data.window=8", "--run.progress=false", "--run.eval_every=0", "--run.log_every=1"]


def config(tmp_path, *extra, name="run"):
    return resolve("tiny", overrides=SMALL + [f"--run.out={tmp_path / name}", *extra])


def weights(out):
    return load_file(str(T.latest_checkpoint(out) / "model.safetensors"))


# ---- config ----
def test_overrides_types_and_yaml(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("model:\n  d_model: 64\noptim:\n  lr: 1e-4\n  betas: [0.8, 0.9]\nrun:\n  compile: false\n")
    c = resolve("tiny", f, ["--model.d_model=96", "--run.ema", "0", "--data.eval_source=none_dir", "--data.latent_cache=null"])
    assert c.model.d_model == 96 and c.optim.lr == 1e-4 and c.optim.betas == (0.8, 0.9) and c.run.ema == 0.0
    assert isinstance(c.run.ema, float) and c.data.latent_cache is None and c.data.eval_source == "none_dir"
    assert c.model.d_ff == resolve("tiny", overrides=["--model.d_model=96"]).model.d_ff != resolve("tiny").model.d_ff
    assert load_config(save_config(c, tmp_path / "c.yaml")) == c
    s = resolve("base")
    assert [st.name for st in s.stages] == ["pretrain", "dialogues", "finetune"] and s.codec.sample_rate == 48000
    assert s.model.latent_dim == s.codec.frame_dim and s.codec.frame_rate == 40


@pytest.mark.parametrize("args, error, message", [
    (["--model.d_modle=256"], KeyError, "did you mean 'model.d_model'"),
    (["--optim.lrr=1"], KeyError, "did you mean 'optim.lr'"),
    (["--modle.d_model=1"], KeyError, "did you mean 'model.d_model'"),
    (["--model.d_model=big"], TypeError, "expects int"),
    (["--optim.lr=fast"], TypeError, "expects float"),
    (["--run.compile=3"], TypeError, "expects bool"),
    (["--loss.policy=sometimes"], ValueError, "policy must be one of"),
    (["--model.latent_dim=8"], ValueError, "codec's frame size"),
    (["--optim.steps=10", "--stages=[{steps: 5}]"], ValueError, "add up to 5"),
])
def test_config_errors(args, error, message):
    with pytest.raises(error, match=message): resolve("tiny", overrides=args)


def test_yaml_unknown_section(tmp_path):
    f = tmp_path / "bad.yaml"; f.write_text("optimizer:\n  lr: 1\n")
    with pytest.raises(KeyError, match="did you mean 'optim"): resolve("tiny", f)


def test_cli_reports_config_errors(capsys):
    from audiochat.cli import main
    assert main(["train", "--model.d_modle=3"]) == 1
    assert "did you mean 'model.d_model'" in capsys.readouterr().err
    assert main(["train", "--preset", "small", "--show-config", "--model.d_model=256", "--optim.lr=2e-4"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["model"]["d_model"] == 256 and shown["optim"]["lr"] == 2e-4 and shown["model"]["n_layers"] == 12


# ---- schedule ----
def test_schedule():
    lrs = [T.learning_rate(s, 2.0, 100, 10, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.2) and lrs[9] == pytest.approx(2.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10])) and all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(0.2, abs=1e-3)
    assert T.learning_rate(55, 2.0, 100, 10, 0.1) == pytest.approx(0.1 * 2 + 0.9 * 2 * 0.5)  # half-way down the cosine
    c = resolve("tiny", overrides={"optim": {"steps": 30, "warmup": 5}, "stages": [dict(name="a", steps=20, lr=1.0), dict(name="b", steps=10, lr=0.5)]})
    assert T.lr_at(c, 24) == pytest.approx(0.5) and T.stage_at(c, 25)[1].name == "b" and T.lr_at(c, 19) < T.lr_at(c, 4)
    with pytest.raises(ValueError, match="past the last stage"): T.stage_at(c, 30)


def test_schedule_matches_transformers():
    from transformers import get_cosine_with_min_lr_schedule_with_warmup
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-3)
    sched = get_cosine_with_min_lr_schedule_with_warmup(opt, 10, 100, min_lr_rate=0.1)
    theirs = []
    for _ in range(101): theirs.append(opt.param_groups[0]["lr"]); opt.step(); sched.step()
    ours = [T.learning_rate(s, 3e-3, 100, 10, 0.1) for s in range(100)]
    # same curve; ours counts warmup from the first step (lr > 0 at step 0), theirs from zero
    assert ours[:10] == pytest.approx(theirs[1:11]) and ours[10:] == pytest.approx(theirs[10:100])


# ---- data ----
def test_plan_epoch_deterministic_bucketed():
    src = ST.DialogueSource("synthetic", 4, max_frames=16, synthetic_dialogues=50)
    a = ST.plan_epoch(src, 3, 1, 4, 20)
    assert a == ST.plan_epoch(src, 3, 1, 4, 20) and a != ST.plan_epoch(src, 4, 1, 4, 20) and a != ST.plan_epoch(src, 3, 2, 4, 20)
    flat = [i for b in a for i in b]
    assert len(flat) == len(set(flat)) == 48 and all(len(b) == 4 for b in a)  # windows 20, 20, 10 -> 5 + 5 + 2 batches
    for b in a:  # within a window, sorted by length then chunked: batches do not interleave in length
        assert max(src.lengths[i] for i in b) - min(src.lengths[i] for i in b) <= max(src.lengths) - min(src.lengths)


def test_dataset_source_streams_records():
    src = ST.DialogueSource(str(SAMPLES), 32, holdout=2)
    records = list(read_records(SAMPLES))
    assert len(src) == len(records) - 2
    assert [src.record(i)["id"] for i in range(len(src))] == [r["id"] for r in records[:-2]]
    ev = ST.DialogueSource(str(SAMPLES), 32, holdout=2, split="eval")
    assert [ev.record(i)["id"] for i in range(2)] == [r["id"] for r in records[-2:]]
    with pytest.raises(ValueError, match="needs latents"): src.turns(0)
    with pytest.raises(FileNotFoundError, match="does not exist"): ST.DialogueSource(str(SAMPLES / "nope"), 32)


def test_understanding_and_missing_source_examples(codec_dir):
    from audiochat.codec.codecs import Codec
    from audiochat.core.scene import Scene
    codec = Codec.from_pretrained(codec_dir)
    src = ST.DialogueSource(str(SAMPLES), 32, max_turns=2, codec=codec, understanding=0.5, refusals=0.5, seed=3)
    base = ST.DialogueSource(str(SAMPLES), 32, max_turns=2)
    n_understand = src.tasks.count("understand")
    assert len(src) == len(base) + n_understand and src.tasks[: len(base)] == ["dialogue"] * len(base)
    again = ST.DialogueSource(str(SAMPLES), 32, max_turns=2, codec=codec, understanding=0.5, refusals=0.5, seed=3)
    assert again.tasks == src.tasks  # the same choices every time
    refused = 0
    for i in range(len(src)):
        turns, record = src.turns(i), src.record(i)
        if src.tasks[i] == "understand":
            assert turns[0].text == UNDERSTAND_PROMPT and turns[0].audio is not None and turns[1].audio is None
            heard = heard_scene(Scene.from_dict(record["turns"][0]["scene"]), turns[0].audio.shape[0] / 40)
            assert Scene.from_json(turns[1].text) == heard and heard.duration == 64 / 40  # the 64 frames kept
        elif len(turns) > 2 * len(record["turns"][:2]):
            refused += 1  # the request about a missing sound comes after some turn: it names no sound of that turn's scene
            at = next(k for k, t in enumerate(turns) if t.role == "assistant" and t.text.startswith('{"answer"'))
            scene = Scene.from_dict(record["turns"][:2][at // 2 - 1]["scene"])
            answer = json.loads(turns[at].text)["answer"]
            assert turns[at].audio is None and not any(s.caption[2:] in turns[at - 1].text for s in scene.sources if s.kind == "sfx")
            assert "nothing was changed" in answer or "unchanged" in answer
    assert refused > 0


def test_no_cot_source_and_fraction_checks(codec_dir):
    from audiochat.codec.codecs import Codec
    src = ST.DialogueSource(str(SAMPLES), 32, max_turns=2, codec=Codec.from_pretrained(codec_dir), cot=False, understanding=1, refusals=1)
    assert all(t.text == NO_COT_TEXT for t in src.turns(0) if t.role == "assistant") and len(src) == 6
    with pytest.raises(ValueError, match="data.refusals is a fraction"): resolve("tiny", overrides=["--data.refusals=1.5"])


# ---- loop, resume, failures ----
def test_exact_resume(tmp_path):
    full = T.train(config(tmp_path, "--optim.steps=6", "--optim.accumulate=2", name="full"))
    T.train(config(tmp_path, "--optim.steps=6", "--optim.accumulate=2", name="split"), until=3)
    assert T.latest_checkpoint(tmp_path / "split").name == "step-0000003"
    resumed = T.train(config(tmp_path, name="split"), resume=True)  # the saved config (6 steps) is used
    assert resumed["step"] == full["step"] == 6
    a, b = weights(tmp_path / "full"), weights(tmp_path / "split")
    assert all(torch.equal(a[k], b[k]) for k in a)
    ea = load_file(str(T.latest_checkpoint(tmp_path / "full") / "ema.safetensors"))
    eb = load_file(str(T.latest_checkpoint(tmp_path / "split") / "ema.safetensors"))
    assert all(torch.equal(ea[k], eb[k]) for k in ea)
    assert [h["loss"] for h in full["history"]] == [h["loss"] for h in resumed["history"]]
    assert not torch.equal(a["embed_tokens.weight"], T.AudioChatModel(resolve("tiny", overrides=SMALL).model).embed_tokens.weight)


def test_nan_steps_are_skipped_then_stop(tmp_path, monkeypatch):
    real, calls = T.forcing_loss, {"n": 0}
    def flaky(model, batch, cfg, audio_end_id, generator=None):
        calls["n"] += 1
        out = real(model, batch, cfg, audio_end_id, generator)
        return LossOutput(out.loss * float("nan"), out.lm, out.diff, out.n_text, out.n_frames) if calls["n"] in (2, 3) else out
    monkeypatch.setattr(T, "forcing_loss", flaky)
    c = config(tmp_path, "--optim.steps=5", "--run.save_every=2")
    before = dict(T.AudioChatModel(c.model).named_parameters())
    state = T.train(c)
    assert state["bad_steps"] == 2 and state["step"] == 5 and state["bad_in_row"] == 0
    w = weights(tmp_path / "run")
    assert all(torch.isfinite(v).all() for v in w.values()) and not torch.equal(w["diffusion_head.weight"], before["diffusion_head.weight"])

    def always_nan(model, batch, cfg, audio_end_id, generator=None):
        calls["n"] += 1
        if calls["n"] > 3: raise FloatingPointError("non-finite loss")
        return real(model, batch, cfg, audio_end_id, generator)
    calls["n"] = 0
    monkeypatch.setattr(T, "forcing_loss", always_nan)
    with pytest.raises(FloatingPointError, match=r"4 steps in a row.*last good checkpoint: .*step-0000002"):
        T.train(config(tmp_path, "--optim.steps=20", "--run.save_every=2", "--run.max_bad_steps=4", name="nan"))


def test_checkpoint_atomic_and_loaded_without_pickle(tmp_path, monkeypatch):
    c = config(tmp_path, "--optim.steps=4", "--run.save_every=2")
    real_save, n = CT.save_file, {"calls": 0}
    def crash_on_second_checkpoint(tensors, path, *a, **k):
        n["calls"] += 1
        if n["calls"] == 4: raise OSError("disk full")  # ema + trainer per checkpoint: the 4th call is in the second one
        return real_save(tensors, path, *a, **k)
    monkeypatch.setattr(CT, "save_file", crash_on_second_checkpoint)
    with pytest.raises(OSError, match="disk full"): T.train(c)
    ck = T.latest_checkpoint(tmp_path / "run")
    assert ck.name == "step-0000002" and sorted(p.name for p in ck.parent.glob("step-*")) == ["step-0000002"]
    assert {p.suffix for p in ck.iterdir()} <= {".safetensors", ".json", ".yaml"}
    monkeypatch.setattr(CT, "save_file", real_save)

    def no_unpickling(*a, **k): raise AssertionError("checkpoint loading must not unpickle")
    monkeypatch.setattr(torch, "load", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    state = T.train(c, resume=True)
    assert state["step"] == 4 and T.latest_checkpoint(tmp_path / "run").name == "step-0000004"
    assert json.loads((T.latest_checkpoint(tmp_path / "run") / "trainer_state.json").read_text())["step"] == 4
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in log if r.get("event") in ("start", "resume")] == ["start", "resume"] and log[0]["config"]["model"]["d_model"] == 32
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))


def test_losses_fall_on_synthetic(tmp_path):
    state = T.train(config(tmp_path, "--optim.steps=40", "--optim.lr=3e-3", "--optim.warmup=5", "--run.eval_every=40"))
    h = state["history"]
    first, last = sum(r["loss"] for r in h[:5]) / 5, sum(r["loss"] for r in h[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert state["evals"] and {"loss", "lm", "diff", "ema_loss"} <= set(state["evals"][-1])


# ---- distributed ----
def torchrun(args):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "audiochat.training.train", *args],
                         env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.parametrize("parallel", ["ddp", pytest.param("fsdp", marks=pytest.mark.slow)])
def test_two_processes_equal_one(tmp_path, parallel):
    """2 processes x 1 micro-batch of 2 == 1 process x 2 micro-batches of 2 (same global batch, same noise).
    FSDP2 also stops after step 2 and resumes from its gathered checkpoint."""
    common = [a for a in SMALL if "synthetic" not in a] + ["--data.synthetic_dialogues=16", "--optim.steps=3", "--run.ema=0.5"]
    T.train(resolve("tiny", overrides=common + ["--optim.accumulate=2", f"--run.out={tmp_path / 'one'}"]))
    two = common + [f"--run.out={tmp_path / 'two'}", f"--run.parallel={parallel}"]
    if parallel == "fsdp":
        torchrun(two + ["--until", "2"])
        torchrun(two + ["--resume"])
    else: torchrun(two)
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    init = T.AudioChatModel(resolve("tiny", overrides=common).model).state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-5
    assert max((a[k] - init[k]).abs().max().item() for k in a) > 1e-3  # the runs did train
    ea, eb = (load_file(str(T.latest_checkpoint(tmp_path / n) / "ema.safetensors")) for n in ("one", "two"))
    assert max((ea[k] - eb[k]).abs().max().item() for k in ea) < 1e-5
    starts = [json.loads(l) for l in (tmp_path / "two" / "log.jsonl").read_text().splitlines() if '"event"' in l]
    assert starts[0]["processes"] == 2 and starts[0]["config"]["run"]["parallel"] == parallel


# ---- the command on real sample data ----
@pytest.fixture(scope="module")
def codec_dir(tmp_path_factory):
    from audiochat.codec.codecs import codec_preset, make_codec
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("codec")
    make_codec(codec_preset("tiny", decoder="griffinlim")).save_pretrained(d / "codec")  # the tiny preset's codec, unfitted
    return d / "codec"


def test_cli_trains_on_sample_dialogues(tmp_path, codec_dir, capsys):
    from audiochat.cli import main
    from audiochat.codec.codecs import Codec
    from audiochat.codec.latents import encode_folder
    cache = tmp_path / "latents"
    encode_folder(Codec.from_pretrained(codec_dir), SAMPLES, cache)
    args = ["train", "--preset", "tiny", f"--data.source={SAMPLES}", f"--data.latent_cache={cache}", "--data.batch_size=2",
            "--data.eval_dialogues=2", "--optim.steps=2", "--data.max_frames=16", f"--run.out={tmp_path / 'run'}", "--run.progress=false"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "step 2: loss" in printed and "held-out:" in printed and "step-0000002" in printed
    assert (tmp_path / "run" / "tokenizer" / "tokenizer.json").exists()
    # without a cache: encoded on the fly with the codec, normalised with statistics saved in the run folder
    args2 = [a for a in args if "latent_cache" not in a and "run.out" not in a] + [f"--data.codec={codec_dir}", "--data.max_turns=1",
                                                                                   f"--run.out={tmp_path / 'fly'}", "--optim.steps=1"]
    assert main(args2) == 0
    stats = load_file(str(tmp_path / "fly" / "latent_stats.safetensors"))
    assert stats["mean"].shape == (32,) and (stats["std"] > 0).all()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(tmp_path / "fly" / "tb"), size_guidance={"images": 0, "audio": 0}).Reload()
    tags = events.Tags()
    assert {"preview/latents", "preview/mel"} <= set(tags["images"]) and {"preview/clean", "preview/estimate", "preview/sampled"} <= set(tags["audio"])
    assert {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_s", "eval/diff", "eval/ema_loss"} <= set(tags["scalars"])


def test_planned_dialogues_are_mixed_into_training(tmp_path, codec_dir):
    "With data.planned_dialogues, a share of the micro-batches are text-only planned dialogues (no audio, valid scenes)."
    from audiochat.core.scene import Scene
    config = resolve("tiny", overrides=[f"--data.source={SAMPLES}", f"--data.codec={codec_dir}", "--data.batch_size=2",
                                        "--data.eval_dialogues=2", "--data.max_frames=16", "--data.planned_dialogues=40",
                                        "--data.planned_share=0.5", f"--run.out={tmp_path / 'run'}"])
    tokenizer, streams, _ = prepare_data(config, tmp_path / "run")
    stream = streams[0]
    assert isinstance(stream, ST.MixedStream)
    kinds = [stream.pick(g)[0] is stream.planned for g in range(8)]
    assert sum(kinds) == 4
    for g in range(4):
        batch = stream[g]
        assert bool(batch.layout.audio.any()) != kinds[g]  # planned batches hold no audio, rendered ones do
    turns = stream.planned.source.turns(3)
    assert [t.role for t in turns][:2] == ["user", "assistant"] and all(t.audio is None for t in turns)
    assert Scene.from_json(turns[1].text).sources
    state = T.train(dataclasses.replace(config, optim=dataclasses.replace(config.optim, steps=4, warmup=1),
                                        run=dataclasses.replace(config.run, progress=False, eval_every=0)))
    assert state["step"] == 4 and all(math.isfinite(h["loss"]) for h in state["history"])


def test_planned_source_gives_assistant_audio_its_scene(codec_dir):
    "plan=True: each assistant audio carries plan_frames of the scene that turn rendered, frame for frame."
    from audiochat.codec.codecs import Codec
    from audiochat.core.scene import Scene
    from audiochat.model.forcing import plan_frames
    codec = Codec.from_pretrained(codec_dir)
    src = ST.DialogueSource(str(SAMPLES), 32, max_turns=2, codec=codec, plan=True)
    plain = ST.DialogueSource(str(SAMPLES), 32, max_turns=2, codec=codec)
    turns, record = src.turns(0), src.record(0)
    spoken = [t for t in turns if t.role == "assistant" and t.audio is not None]
    assert spoken and all(t.plan is None for t in plain.turns(0))
    for t, rec in zip(spoken, record["turns"]):
        assert torch.equal(t.plan, plan_frames(Scene.from_dict(rec["scene"]), t.audio.shape[0]))


def test_logged_diffusion_loss_counts_only_steps_with_audio():
    "A text-only micro-batch has no diffusion loss: the logged `diff` is the mean over the steps that had audio."
    from types import SimpleNamespace

    import torch

    from audiochat.core.learner import Recorder
    from audiochat.model.forcing import LossOutput
    from audiochat.training.train import step_losses

    def out(diff, frames): return LossOutput(torch.tensor(1.0 + diff), torch.tensor(1.0), torch.tensor(diff), 10, frames)
    learn = SimpleNamespace(outs=[out(0.0, 0), out(0.6, 32)], grad_norm=1.0)
    assert step_losses(learn)["diff"] == pytest.approx(0.6) and step_losses(learn)["lm"] == 1.0
    learn.outs = [out(0.0, 0)]
    assert step_losses(learn)["diff"] is None
    rec = Recorder(every=3, values=lambda learn: learn.values, keys=("diff",))
    learn = SimpleNamespace(step=0, stop=3, skipped=False, state={})
    rec.before_fit(learn)
    for learn.step, learn.values in zip((1, 2, 3), ({"diff": 0.9}, {"diff": None}, {"diff": 0.5})):
        rec.after_step(learn)
    assert learn.row["diff"] == pytest.approx(0.5)  # step 1 made its own row; steps 2 (no audio) and 3: only 3 counts
