"""Conventions a Hugging Face and PyTorch user expects: one Hub id convention (a folder, or `ORG/NAME` with `hf:` as
an alias) read through the Hub cache; `from_pretrained` on a training checkpoint gives the weights the engine samples
with; resampling at any rate through a polyphase library filter; KAD's bandwidth as kadtk sets it; the web app's
Gradio conventions; `--help` without torch; a light base install; a data export `datasets.load_dataset` reads."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fake_hub

ROOT = Path(__file__).resolve().parents[1]


def _tiny_llama(folder, vocab_size: int, d_model: int = 128, n_heads: int = 4, n_kv_heads: int = 2, layers: int = 4):
    "A tiny Llama checkpoint saved by transformers itself (the stand-in of SmolLM2, same family)."
    import logging

    from transformers import LlamaConfig, LlamaForCausalLM

    from audiochat.model.sct import ModelConfig
    d_ff = ModelConfig(d_model=d_model, n_heads=n_heads, n_kv_heads=n_kv_heads).d_ff
    logging.getLogger("transformers").setLevel(logging.ERROR)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=d_ff, num_hidden_layers=layers,
                                 num_attention_heads=n_heads, num_key_value_heads=n_kv_heads, rope_theta=10000.0,
                                 max_position_embeddings=256, tie_word_embeddings=False)).save_pretrained(folder)


# 1. One Hub id convention
def test_bare_hub_ids_everywhere(tmp_path, hub, monkeypatch):
    "Codec, tokenizer, Hugging Face weights and the model load from `ORG/NAME` (and `hf:ORG/NAME`) in the offline cache."
    from audiochat.codec.codecs import CodecConfig, make_codec
    from audiochat.core.io import hub_id, resolve_pretrained
    from audiochat.model.sct import AudioChatModel, preset
    from audiochat.model.tokenizer import load_tokenizer, train_tokenizer
    from audiochat.model.transformer import Transformer, config_from_hf

    assert hub_id("org/name") == ("org/name", None) and hub_id("hf:org/name@v1") == ("org/name", "v1")
    assert hub_id("runs/a/b") is None and hub_id("/abs/path") is None and hub_id("./x") is None and hub_id("a") is None
    torch.manual_seed(0)
    codec = make_codec(CodecConfig(strides=(2, 4, 5, 10), latent_dim=4, encoder_channels=4, decoder_channels=8)).eval()
    codec.save_pretrained(tmp_path / "codec")
    train_tokenizer(["a rainy night, a door creaks"] * 20, vocab_size=300).save_pretrained(tmp_path / "tok")
    _tiny_llama(tmp_path / "lm", vocab_size=64, d_model=32, n_heads=4, n_kv_heads=2, layers=2)
    AudioChatModel(preset("tiny", vocab_size=300)).save_pretrained(tmp_path / "model")
    for name in ("codec", "tok", "lm", "model"): fake_hub(hub, f"org/{name}", tmp_path / name)

    x = torch.randn(1, 4000) * 0.1
    with torch.inference_mode():
        for name in ("org/codec", "hf:org/codec"): assert torch.equal(type(codec).from_pretrained(name).encode(x), codec.encode(x))
    text = "a rainy night <|audio_start|>"
    for name in ("org/tok", "hf:org/tok"): assert load_tokenizer(name)(text)["input_ids"] == load_tokenizer(tmp_path / "tok")(text)["input_ids"]
    for name in ("org/lm", "hf:org/lm"):
        assert config_from_hf(name) == config_from_hf(tmp_path / "lm")
        a, b = Transformer.from_hf(name).state_dict(), Transformer.from_hf(tmp_path / "lm").state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    for name in ("org/model", "hf:org/model"):
        assert AudioChatModel.from_pretrained(name).config == AudioChatModel.from_pretrained(tmp_path / "model").config
    monkeypatch.chdir(tmp_path)
    assert resolve_pretrained("org/lm").is_relative_to(hub)
    with pytest.raises(FileNotFoundError, match="no such local folder; not in the local Hugging Face cache"): resolve_pretrained("org/missing")
    with pytest.raises(FileNotFoundError, match="not a Hugging Face Hub id"): resolve_pretrained("no/such/folder")
    (tmp_path / "org" / "lm").mkdir(parents=True)  # an existing local folder of the same name wins, as in transformers
    assert resolve_pretrained("org/lm") == Path("org/lm")
    with pytest.raises(FileNotFoundError, match="org/ is a local folder, so it is not read as a Hub id"): resolve_pretrained("org/missing")
    assert resolve_pretrained("hf:org/lm").is_relative_to(hub)  # hf: says which is meant


def test_base_preset_names_smollm2_weights_and_tokenizer():
    from audiochat.core.presets import PRESETS
    from audiochat.runs.config import resolve
    c = resolve("base")
    assert c.model.pretrained == c.data.tokenizer == "HuggingFaceTB/SmolLM2-360M"
    assert PRESETS["train"]["base"]["data"]["tokenizer"] == PRESETS["train"]["base"]["model"]["pretrained"]


def test_pretrained_weights_and_tokenizer_from_the_cache_set_the_vocabulary(tmp_path, hub):
    """The base preset's recipe at a tiny size: weights and tokenizer of one Hub id, read from the offline cache; the
    model's vocabulary follows the tokenizer (its added special tokens included), the checkpoint's rows are kept."""
    from safetensors.torch import load_file

    from audiochat.model.tokenizer import load_tokenizer, train_tokenizer
    from audiochat.model.transformer import load_safetensors_dir
    from audiochat.training.train import train_tiny_run
    lm = tmp_path / "lm"
    train_tokenizer(["a rainy night, a door creaks, the detective whispers"] * 40, vocab_size=300).save_pretrained(lm)
    _tiny_llama(lm, vocab_size=300)
    fake_hub(hub, "HuggingFaceTB/SmolLM2-tiny", lm)
    n = len(load_tokenizer("HuggingFaceTB/SmolLM2-tiny"))
    run = train_tiny_run(tmp_path / "run", steps=1, overrides=[
        "--model.pretrained=HuggingFaceTB/SmolLM2-tiny", "--data.tokenizer=HuggingFaceTB/SmolLM2-tiny", "--model.vocab_size=64",
        "--model.n_layers=4", "--run.ema=0"])
    from audiochat.core.checkpointing import latest_checkpoint
    step = latest_checkpoint(run)
    config = json.loads((step / "config.json").read_text())
    assert config["vocab_size"] == -(-n // 64) * 64 >= n > 64
    weights, original = load_file(str(step / "model.safetensors")), load_safetensors_dir(lm)
    assert weights["embed_tokens.weight"].shape[0] == config["vocab_size"]
    moved = (weights["embed_tokens.weight"][:300] - original["model.embed_tokens.weight"]).abs().max()
    assert moved < 0.05  # one step of training from the checkpoint's rows, not a fresh init


# 2. from_pretrained on a training checkpoint
def test_from_pretrained_on_a_checkpoint_gives_the_engine_weights(tmp_path):
    from audiochat.model.sct import AudioChatModel
    from audiochat.serve.chat import ChatEngine
    from audiochat.training.train import train_tiny_run
    run = train_tiny_run(tmp_path / "run", steps=3)
    from audiochat.core.checkpointing import latest_checkpoint
    step = latest_checkpoint(run)
    assert (step / "ema.safetensors").exists()
    engine = ChatEngine.load(run)
    model, raw = AudioChatModel.from_pretrained(step), AudioChatModel.from_pretrained(step, ema=False)
    assert model.weights == engine.model.weights == "ema" and raw.weights == "raw"
    a, b = model.state_dict(), engine.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], raw.state_dict()[k]) for k in a)


# 6. Resampling at any rate
@pytest.mark.parametrize("sr_in,sr_out", [(12007, 16000), (44100, 16000), (16000, 48000), (22050, 16000)])
@pytest.mark.parametrize("freq", [1000.0, 5000.0])
def test_resample_snr_at_odd_and_common_rates(sr_in, sr_out, freq):
    "A tone resampled is the same tone: > 55 dB SNR (the linear pre-interpolation it replaces gave 32 and 5 dB at 12007 Hz)."
    import math

    from audiochat.core.audio import resample
    t = torch.arange(2 * sr_in, dtype=torch.float64) / sr_in
    y = resample((0.5 * torch.sin(2 * math.pi * freq * t)).float()[None], sr_in, sr_out)
    assert y.shape == (1, 2 * sr_out) and y.dtype == torch.float32
    ref = 0.5 * torch.sin(2 * math.pi * freq * torch.arange(y.shape[-1], dtype=torch.float64) / sr_out)
    k = sr_out // 10  # the edges, where the filter runs off the signal, are left out
    snr = 10 * math.log10((ref[k:-k] ** 2).mean() / ((y[0, k:-k].double() - ref[k:-k]) ** 2).mean())
    assert snr > 55, snr


# 7. KAD's bandwidth as kadtk sets it
def _kadtk_style(x, y, bandwidth=None, eps=1e-8):
    "KAD computed as kadtk's calc_kernel_audio_distance does it (torch, median pairwise distance of y, gamma with eps)."
    x, y = torch.as_tensor(x, dtype=torch.float64), torch.as_tensor(y, dtype=torch.float64)
    bandwidth = torch.median(torch.pdist(y)).item() if bandwidth is None else bandwidth
    gamma = 1 / (2 * bandwidth ** 2 + eps)
    def mean_k(a, b, off_diagonal):
        d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
        k = torch.exp(-gamma * d2)
        return (k.sum() - k.diagonal().sum()) / (len(a) * (len(a) - 1)) if off_diagonal else k.mean()
    return 100 * float(mean_k(x, x, True) + mean_k(y, y, True) - 2 * mean_k(x, y, False))


def test_kad_bandwidth_follows_kadtk():
    from audiochat.eval.metrics import kad
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 8)), rng.normal(0.4, 2.0, size=(31, 8))  # 465 pairs in y: an odd count, one median
    assert kad(x, y) == pytest.approx(_kadtk_style(x, y), rel=1e-6)
    assert kad(x, y, bandwidth=1.3) == pytest.approx(_kadtk_style(x, y, 1.3), rel=1e-6)
    reference_bw = float(np.median([np.linalg.norm(a - b) for i, a in enumerate(x) for b in x[i + 1:]]))
    assert kad(x, y, bandwidth_from="reference") == pytest.approx(_kadtk_style(x, y, reference_bw), rel=1e-6)
    assert abs(kad(x, y) - kad(x, y, bandwidth_from="reference")) > 1  # the two conventions differ on these sets
    with pytest.raises(ValueError, match="bandwidth_from"): kad(x, y, bandwidth_from="both")


# 8. The web app's Gradio conventions
SERVE = """
import json, sys
from audiochat.serve.app import serve
from gradio_client import Client
app = serve(sys.argv[1], steps=1, block=False, quiet=True)
client = Client(app.local_url, verbose=False, download_files=sys.argv[2])  # the browser's copies: not the server's folder
api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
client.predict("A short story: rain on a roof.", api_name="/tell")
print(json.dumps(dict(url=app.local_url, host=app.server_name, folder=str(app.audiochat_folder),
                      names={k: [p["parameter_name"] for p in v["parameters"]] for k, v in api.items()})))
"""


def test_app_follows_gradio_conventions(tmp_path):
    "GRADIO_SERVER_PORT / GRADIO_SERVER_NAME are honoured, API parameters have names, no temporary folder outlives the server."
    pytest.importorskip("gradio")
    from audiochat.serve.app import free_port
    from audiochat.training.train import train_tiny_run
    run = train_tiny_run(tmp_path / "run", steps=2)
    port, temp = free_port(), tmp_path / "gradio-temp"
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "localhost", "GRADIO_TEMP_DIR": str(temp),
           "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    out = subprocess.run([sys.executable, "-c", SERVE, str(run), str(tmp_path / "downloads")], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("{")))
    assert seen["url"].rstrip("/").endswith(f":{port}") and seen["host"] == "localhost"
    assert seen["names"]["/tell"] == ["request"] and seen["names"]["/render"] == ["scene_json"]
    assert seen["names"]["/plan"] == ["request", "audio"] and seen["names"]["/understand"] == ["audio"]
    assert not Path(seen["folder"]).exists()  # the sessions' audio went with the server
    assert not any(p.is_file() for p in temp.rglob("*")) if temp.exists() else True


# 5. --help without torch, listing every config key
@pytest.mark.parametrize("command", ["train", "eval", "codec", "codec train"])
def test_help_loads_no_torch(command):
    import time
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "audiochat", *command.split(), "--help"], capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - t0
    assert out.returncode == 0 and f"usage: audiochat {command}" in out.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" not in imported and "numpy" not in imported
    assert seconds < 2.0  # about 0.3 s; the bound leaves room for a busy shared CPU


def test_train_help_lists_every_config_key_with_its_default():
    import ast
    import dataclasses

    from audiochat.core.args import config_fields, train_parser
    from audiochat.runs.config import RANGES, SECTIONS, all_keys
    from audiochat.sim.data import DataConfig
    text, fields = train_parser().format_help(), config_fields()
    assert set(fields) == set(all_keys()) - {"stages"}
    checked = 0
    for section, cls in {**SECTIONS, "data.build": DataConfig}.items():
        for f in dataclasses.fields(cls):
            key, default = f"{section}.{f.name}", f.default if f.default is not dataclasses.MISSING else None
            assert f"--{key}=" in text, key
            try: shown = ast.literal_eval(fields[key][1])
            except ValueError: continue  # a name (SAMPLE_RATE) or a factory: shown as written in the source
            assert shown == default, (key, shown, default)
            checked += 1
            if key in RANGES: assert f", {RANGES[key]})" in text.split(f"--{key}=")[1].splitlines()[0], key
    assert checked > 80


# 4. A lighter, honest install
def _pyproject() -> dict:
    import tomllib
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirements(project: dict) -> dict[str, tuple[str, str]]:
    "{normalised distribution name: (where, floor)} of the base dependencies and every extra but dev."
    import re
    out = {}
    for where, reqs in [("base", project["dependencies"])] + [(k, v) for k, v in project["optional-dependencies"].items() if k != "dev"]:
        for r in reqs:
            m = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", r.split(";")[0].strip())
            assert m, f"pyproject: {r!r} has no >= floor"
            out[m[1].lower().replace("_", "-")] = (where, m[2])
    return out


def test_meeteval_and_tensorboard_are_extras():
    project = _pyproject()["project"]
    base = {r.split(">=")[0].strip().lower() for r in project["dependencies"]}
    assert not base & {"meeteval", "tensorboard", "gradio", "datasets"}
    extras = project["optional-dependencies"]
    assert extras["eval"] == ["meeteval>=0.4.3"] and extras["tensorboard"][0].startswith("tensorboard>=")
    dev = extras["dev"][0]
    for name in ("eval", "tensorboard", "hf", "ui"): assert name in dev  # the tests need them all


def test_every_imported_package_is_declared_with_a_tested_floor():
    """Every package the code imports (lazily too) is a declared requirement, and the installed version satisfies its
    floor. A fresh install takes the newest release above each floor, so the floor (the version the project was
    developed and tested with) may lie below what is installed, never above."""
    import ast
    from importlib.metadata import packages_distributions, version
    declared, dists = _requirements(_pyproject()["project"]), packages_distributions()
    stdlib = set(sys.stdlib_module_names) | {"audiochat"}
    imported = set()
    for py in (ROOT / "audiochat").rglob("*.py"):
        for node in ast.walk(ast.parse(py.read_text())):
            if isinstance(node, ast.Import): imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0: imported.add(node.module.split(".")[0])
    by_hand = {"openflam"}  # OpenFLAMScorer: an adapter to a research package installed by hand, with its weights
    for module in sorted(imported - stdlib - by_hand):
        names = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        assert names & set(declared), f"audiochat imports {module} ({names or 'not installed'}) but pyproject declares none of it"
    for name, (_, floor) in declared.items():
        installed = tuple(int(x) for x in version(name).split(".")[:2])
        assert tuple(int(x) for x in floor.split(".")[:2]) <= installed, f"{name}: floor {floor} above the installed {version(name)}"


def test_tcpwer_and_cpwer_without_meeteval(monkeypatch):
    "Without the eval extra the from-scratch scorers answer, with MeetEval's numbers."
    import audiochat.eval.wer as WM
    ref = [dict(speaker="a", words="the rain falls", start_time=0.0, end_time=1.5),
           dict(speaker="b", words="hello there", start_time=1.0, end_time=2.0)]
    hyp = [dict(speaker="x", words="the rain fell", start_time=0.1, end_time=1.4),
           dict(speaker="y", words="hello", start_time=1.2, end_time=2.0)]
    with_meeteval = WM.tcpwer(ref, hyp, collar=0.5), WM.cpwer(ref, hyp)
    monkeypatch.setitem(sys.modules, "meeteval", None)  # `import meeteval` now fails, as in a base install
    monkeypatch.setattr(WM, "has_meeteval", lambda: False)
    assert (WM.tcpwer(ref, hyp, collar=0.5), WM.cpwer(ref, hyp)) == with_meeteval


def test_training_without_tensorboard(tmp_path, monkeypatch, capsys):
    from audiochat.training.train import train_tiny_run
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as in a base install
    run = train_tiny_run(tmp_path / "run", steps=2)
    assert "TensorBoard logging is off" in capsys.readouterr().err
    assert (run / "log.jsonl").exists() and not list(run.rglob("events.out.tfevents.*"))


# 3. The data export: the Hub's layout, audio read back bit for bit
def test_export_is_a_hub_dataset_folder_read_back_bit_for_bit(tmp_path):
    import io

    import datasets
    import soundfile as sf

    from audiochat.sim.data import DATA_SAMPLES, read_records
    from audiochat.sim.data_export import export_hf
    out = tmp_path / "audiochat-samples"
    export_hf(DATA_SAMPLES / "dialogues", out)
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.parquet")) == ["data/train-00000-of-00001.parquet"]
    card = (out / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "path: data/train-*.parquet" in card
    ds = datasets.load_dataset(str(out))  # what `load_dataset("ORG/NAME")` reads once the folder is uploaded
    assert list(ds) == ["train"] and isinstance(ds["train"].features["audio"], datasets.Audio)
    rows = iter(ds["train"].cast_column("audio", datasets.Audio(decode=False)))
    for r in read_records(DATA_SAMPLES / "dialogues"):
        for t in r["turns"]:
            audio = next(rows)["audio"]
            assert audio["bytes"] == Path(t["audio"]).read_bytes()  # the turn's FLAC file, bit for bit
            a, sr = sf.read(io.BytesIO(audio["bytes"]), dtype="int16")
            b, sr_b = sf.read(t["audio"], dtype="int16")
            assert sr == sr_b and (a == b).all()
    export_hf(DATA_SAMPLES / "dialogues", out)  # a second export replaces the first
    (tmp_path / "notes").mkdir(); (tmp_path / "notes" / "mine.txt").write_text("keep")
    with pytest.raises(ValueError, match="not a dataset folder"): export_hf(DATA_SAMPLES / "dialogues", tmp_path / "notes")
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep"
