"""The project in the Hugging Face / Gradio world: light imports, a `datasets` export, Hub ids, run bundles.
No network: the Hub is a local cache built by the tests, with HF_HUB_OFFLINE=1."""
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fake_hub


def _python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_light_imports():
    "Reading scenes and records loads neither torch, pyplot nor pyloudnorm; `audiochat data --help` needs no torch."
    out = _python(
        "import sys, audiochat.core.scene, audiochat.sim.data, audiochat.cli as cli\n"
        "try: cli.main(['data', '--help'])\n"
        "except SystemExit: pass\n"
        "print(sorted(m for m in ('torch', 'matplotlib.pyplot', 'pyloudnorm') if m in sys.modules))")
    assert out.splitlines()[-1] == "[]"
    out = _python("import sys, audiochat.core.audio; print(sorted(m for m in ('matplotlib.pyplot', 'pyloudnorm') if m in sys.modules))")
    assert out == "[]"


def test_export_hf(tmp_path):
    "`audiochat data export --format hf` writes one row per turn; `load_dataset(folder)` gives back the records, audio included."
    import io
    import json

    import datasets
    import soundfile as sf

    from audiochat.cli import main
    from audiochat.sim.data import read_records

    samples = Path(__file__).parents[1] / "audiochat" / "data_samples" / "dialogues"
    assert main(["data", "export", "--format", "hf", "--data", str(samples), "--out", str(tmp_path / "hf")]) == 0
    ds = datasets.load_dataset(str(tmp_path / "hf"), split="train")  # the folder as the Hub would serve it
    assert isinstance(ds.features["audio"], datasets.Audio)
    rows = iter(ds.cast_column("audio", datasets.Audio(decode=False)))  # decoding needs torchcodec; the bytes do not
    n = 0
    for r in read_records(samples):
        for j, t in enumerate(r["turns"]):
            row = next(rows); n += 1
            assert (row["id"], row["split"], row["turn"], row["request"], row["subtask"]) == (r["id"], r["split"], j, t["user"], t["subtask"])
            assert json.loads(row["scene"]) == t["scene"] and row["answer"] == t["answer"]
            a, sr = sf.read(io.BytesIO(row["audio"]["bytes"]))
            b, sr_b = sf.read(t["audio"])
            assert sr == sr_b == ds.features["audio"].sampling_rate and (a == b).all()
    assert n == len(ds)


def test_export_hf_refuses_a_folder_without_data(tmp_path):
    from audiochat.sim.data_export import export_hf
    with pytest.raises(FileNotFoundError):
        export_hf(tmp_path, tmp_path / "out")




def test_resolve_pretrained(tmp_path, hub):
    from audiochat.core.io import resolve_pretrained
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "config.json").write_text("{}")
    assert resolve_pretrained(tmp_path / "local") == tmp_path / "local"  # a local folder, as it is
    fake_hub(hub, "org/thing", tmp_path / "local")
    d = resolve_pretrained("hf:org/thing", ["config.json"])
    assert d.is_dir() and str(d).startswith(str(hub)) and (d / "config.json").read_text() == "{}"
    with pytest.raises(FileNotFoundError, match="folder not found"): resolve_pretrained(tmp_path / "org/thing")  # never fetched
    with pytest.raises(FileNotFoundError, match="not in the local Hugging Face cache"): resolve_pretrained("hf:org/missing")
    with pytest.raises(ValueError, match="hf:ORG/NAME"): resolve_pretrained("hf:no-org")


def test_hub_ids_codec_tokenizer_weights(tmp_path, hub):
    "The codec, the tokenizer and Hugging Face weights load from `hf:ORG/NAME` exactly as from their folders."
    import logging

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from audiochat.codec.codecs import CodecConfig, make_codec
    from audiochat.model.tokenizer import load_tokenizer, train_tokenizer
    from audiochat.model.transformer import Transformer, config_from_hf

    torch.manual_seed(0)
    codec = make_codec(CodecConfig(strides=(2, 4, 5, 10), latent_dim=4, encoder_channels=4, decoder_channels=8)).eval()
    codec.save_pretrained(tmp_path / "codec")
    train_tokenizer(["a rainy night, a door creaks", "the detective whispers"] * 20, vocab_size=300).save_pretrained(tmp_path / "tok")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    Qwen2ForCausalLM(Qwen2Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                                 num_key_value_heads=2, max_position_embeddings=64)).save_pretrained(tmp_path / "lm")
    for name in ("codec", "tok", "lm"): fake_hub(hub, f"org/{name}", tmp_path / name)

    x = torch.randn(2, 4000) * 0.1
    with torch.inference_mode():
        assert torch.equal(type(codec).from_pretrained("hf:org/codec").encode(x), codec.encode(x))
    text = "a rainy night <|audio_start|>"
    assert load_tokenizer("hf:org/tok")(text)["input_ids"] == load_tokenizer(tmp_path / "tok")(text)["input_ids"]
    assert config_from_hf("hf:org/lm") == config_from_hf(tmp_path / "lm")
    a, b = Transformer.from_hf("hf:org/lm").state_dict(), Transformer.from_hf(tmp_path / "lm").state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(FileNotFoundError): load_tokenizer("hf:org/nope")


def _answer(engine, request):
    "The chain of thought and latents of a story (or the raw text of a refused one): what must survive a move."
    from audiochat.serve.replies import ChatError
    try: r = engine.tell(request)
    except ChatError as e: return ("error", e.raw), None
    return r.cot, r.latents


def test_bundle_moved_gives_identical_outputs(tmp_path, hub):
    "A tiny run bundled, moved to another folder (and into the Hub cache) answers exactly as the run does."
    import json
    import shutil

    import torch

    from audiochat.serve.chat import ChatEngine
    from audiochat.training.train import train_tiny_run

    torch.manual_seed(0)
    run = train_tiny_run(tmp_path / "run", steps=2)
    (run / "learning.json").write_text(json.dumps({"dialogues": 3, "cot": {"valid": 0.5, "by": {"story": 1}}}))
    settings = dict(steps=3, max_new_tokens=200, seed=1)
    engine = ChatEngine.load(run, **settings)
    bundle = engine.save_pretrained(tmp_path / "bundle")
    card = (bundle / "README.md").read_text()
    assert "tiny" in card and "| cot.valid | 0.5 |" in card and "learning.json" in {p.name for p in bundle.iterdir()}
    assert str(tmp_path) not in (bundle / "config.yaml").read_text()  # no outside paths
    moved = Path(shutil.move(str(bundle), str(tmp_path / "elsewhere" / "bundle")))
    shutil.rmtree(run)  # nothing of the run is needed any more
    request = "A story about rain on a window."
    cot, latents = _answer(engine, request)
    for again in (ChatEngine.from_pretrained(moved, **settings), ChatEngine.load(moved, **settings)):
        cot2, latents2 = _answer(again, request)
        assert cot2 == cot and (latents is None) == (latents2 is None)
        if latents is not None: assert torch.equal(latents, latents2)
    fake_hub(hub, "org/audiochat-tiny", moved)
    for name in ("hf:org/audiochat-tiny", "org/audiochat-tiny"):  # a Hub id, with or without the hf: prefix
        for load in (ChatEngine.from_pretrained, ChatEngine.load):
            cot3, latents3 = _answer(load(name, **settings), request)
            assert cot3 == cot and (latents is None or torch.equal(latents, latents3))
    with pytest.raises(FileNotFoundError, match="not a bundle"): ChatEngine.from_pretrained(moved / "codec")


def test_model_and_scorer_follow_the_hub_convention(tmp_path, hub):
    """AudioChatModel and TinyFLAM: save_pretrained writes config.json + model.safetensors; from_pretrained gives the same
    config (a dataclass) and weights, from the folder and from a repository in the offline Hub cache."""
    import torch

    from audiochat.eval.scorer import ScorerConfig, TinyFLAM
    from audiochat.model.sct import AudioChatModel, ModelConfig, preset
    for name, model in (("model", AudioChatModel(preset("tiny", vocab_size=300))), ("scorer", TinyFLAM(ScorerConfig()))):
        model.save_pretrained(tmp_path / name)
        assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / name).iterdir()}
        fake_hub(hub, f"org/{name}", tmp_path / name)
        for source in (tmp_path / name, f"org/{name}"):
            again = type(model).from_pretrained(source)
            assert type(again.config) is type(model.config) and again.config == model.config
            assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert isinstance(AudioChatModel.from_pretrained(tmp_path / "model").config, ModelConfig)


def test_half_precision_bundle_loads_as_float32(tmp_path):
    "save_pretrained(half=True): parameters stored in float16 (buffers kept), loaded back as float32 with the rounded values."
    import json

    import torch
    from safetensors.torch import load_file

    from audiochat.serve.chat import ChatEngine
    from audiochat.training.train import train_tiny_run

    run = train_tiny_run(tmp_path / "run", steps=1)
    engine = ChatEngine.load(run, steps=2)
    bundle = engine.save_pretrained(tmp_path / "bundle", half=True)
    assert json.loads((bundle / "bundle.json").read_text())["dtype"] == "float16"
    for stored, module in ((load_file(str(bundle / "model" / "model.safetensors")), engine.model),
                           (load_file(str(bundle / "codec" / "model.safetensors")), engine.codec)):
        params = dict(module.named_parameters())
        assert params and all(stored[k].dtype == torch.float16 for k in params)
        assert all(v.dtype == torch.float32 for k, v in stored.items() if k not in params and v.is_floating_point())
    again = ChatEngine.from_pretrained(bundle, steps=2)
    for k, p in again.model.named_parameters():
        assert p.dtype == torch.float32 and torch.equal(p, engine.model.state_dict()[k].half().float())
    r = again.tell("Rain on a roof.", seconds=1.0) if not again.thinks else again.tell("A 1-second story: rain.")
    assert r.audio is None or torch.isfinite(r.audio).all()
