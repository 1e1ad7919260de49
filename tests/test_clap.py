"""KAD and FAD on CLAP embeddings: a tiny randomly initialised CLAP saved as a checkpoint is laid out, loaded offline,
embedded, and used by the evaluation harness and `audiochat eval --embeddings clap`."""
import json
import math

import pytest
import torch
import transformers

from audiochat.cli import main as cli_main
from audiochat.core.audio import SAMPLE_RATE
from audiochat.eval.evaluate import SCORER_EMBEDDINGS, evaluate, summarize
from audiochat.eval.metrics import ClapEmbedder, clap_embeddings, fad, kad, load_clap
from audiochat.eval.report import eval_main, format_tables
from audiochat.eval.systems import OracleSystem, SilenceSystem


def save_tiny_clap(folder, fusion: bool = False):
    """A few-thousand-parameter CLAP with random weights. The HTSAT audio config must agree with itself: the feature
    extractor's mel bins equal `num_mel_bins`, `spec_size` is a multiple of them (the spectrogram is folded into a
    square image), the window divides the patch grid (64 / 4 = 16, then 8) at every stage, and `hidden_size` equals the
    last stage's width, `patch_embeds_hidden_size * 2 ** (stages - 1)`, which the projection reads."""
    torch.manual_seed(0)
    text = dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=32)
    audio = dict(num_mel_bins=16, spec_size=64, patch_size=4, patch_stride=4, window_size=4, depths=[1, 1],
                 num_attention_heads=[2, 2], patch_embeds_hidden_size=16, hidden_size=32, num_hidden_layers=2,
                 enable_fusion=fusion)
    model = transformers.ClapModel(transformers.ClapConfig(text_config=text, audio_config=audio, projection_dim=8))
    model.save_pretrained(folder)
    extractor = transformers.ClapFeatureExtractor(feature_size=16, max_length_s=1, fft_window_size=512,
                                                  truncation="fusion" if fusion else "rand_trunc")
    extractor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory):
    return save_tiny_clap(tmp_path_factory.mktemp("clap") / "tiny-clap")


@pytest.fixture(scope="module")
def clips():
    "Eight different 1.5-3 s clips at SAMPLE_RATE: tones, chirps and clicks, stereo and mono."
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(8):
        t = torch.arange(int((1.5 + 0.2 * i) * SAMPLE_RATE)) / SAMPLE_RATE
        x = 0.3 * torch.sin(2 * math.pi * (200 + 90 * i) * t * (1 + 0.3 * t))
        x[:: SAMPLE_RATE // (4 + i)] += 0.5  # clicks
        out.append(torch.stack([x, 0.5 * x]) if i % 2 else x + 0.01 * torch.randn(len(x), generator=g))
    return out


def test_load_clap(clap_dir):
    model, extractor = load_clap(clap_dir)
    assert not model.training and extractor.sampling_rate == 48_000
    emb = ClapEmbedder.load(str(clap_dir), batch_size=3)
    assert emb.label == f"CLAP: {clap_dir}" and emb.batch_size == 3
    assert ClapEmbedder(model, extractor, "laion/clap-htsat-unfused").label == "CLAP: laion/clap-htsat-unfused"


def test_embeddings_shape_and_determinism(clap_dir, clips):
    model, extractor = load_clap(clap_dir)
    e = clap_embeddings(model, extractor, clips, batch_size=4)
    assert e.shape == (len(clips), 8) and e.dtype == torch.float32 and torch.isfinite(e).all()
    assert torch.allclose(e.norm(dim=1), torch.ones(len(clips)), atol=1e-5)
    assert torch.equal(clap_embeddings(model, extractor, clips, batch_size=4), e)  # identical inputs, identical output
    assert torch.allclose(clap_embeddings(model, extractor, clips, batch_size=1), e, atol=1e-5)  # batching: rounding only
    assert torch.allclose(clap_embeddings(model, extractor, clips[2:3])[0], e[2], atol=1e-5)  # a clip alone
    assert torch.allclose(ClapEmbedder(model, extractor, "tiny")(iter(clips)), e, atol=1e-5)
    assert not torch.allclose(e[0], e[1], atol=1e-3)  # different audio, different embeddings
    # silence and a clip shorter than one STFT window are still finite
    assert torch.isfinite(clap_embeddings(model, extractor, [torch.zeros(2, SAMPLE_RATE), torch.randn(100)])).all()


def test_windows_and_rates(clap_dir, clips):
    "Long clips are cut into equal windows (<= the extractor's 1 s here); a clip given at 48 kHz needs no resampling."
    model, extractor = load_clap(clap_dir)
    long = torch.cat([clips[0]] * 3)  # about 4.5 s: five windows
    assert torch.isfinite(clap_embeddings(model, extractor, [long])).all()
    x48 = torch.nn.functional.interpolate(clips[0][None, None], scale_factor=3, mode="linear")[0, 0]
    assert torch.isfinite(clap_embeddings(model, extractor, [x48], sample_rate=48_000)).all()
    with pytest.raises(ValueError, match="clip 1"): clap_embeddings(model, extractor, [clips[0], torch.zeros(2, 0)])
    with pytest.raises(ValueError, match="no clips"): clap_embeddings(model, extractor, [])


def test_fusion_checkpoint_is_deterministic(tmp_path, clips):
    "A fusion checkpoint's extractor marks one short clip at random as 'longer'; the embeddings must not depend on it."
    model, extractor = load_clap(save_tiny_clap(tmp_path / "fused", fusion=True))
    a = clap_embeddings(model, extractor, clips[:4], batch_size=4)
    assert torch.isfinite(a).all() and a.shape == (4, 8)
    for _ in range(3): assert torch.equal(clap_embeddings(model, extractor, clips[:4], batch_size=4), a)


def test_kad_fad_on_clap(clap_dir, clips):
    "A set against itself: FAD 0, KAD in [-200/n, 0] (the unbiased estimate, every kernel value <= 1); noise is far."
    emb = ClapEmbedder.load(clap_dir)
    x = emb(clips)
    noise = emb([0.1 * torch.randn(SAMPLE_RATE * 2, generator=torch.Generator().manual_seed(i)) for i in range(8)])
    assert -200 / len(clips) <= kad(x, x) <= 1e-9
    assert fad(x, x) == pytest.approx(0.0, abs=1e-6)
    assert kad(x, noise) > 0 and kad(x, noise) > kad(x, x) + 10
    assert fad(x, noise) > 1e-3


def test_bad_clap_folders(tmp_path):
    missing = tmp_path / "no-such-clap"
    with pytest.raises(FileNotFoundError, match="no-such-clap"): load_clap(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"): load_clap(tmp_path / "empty")
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (other / "preprocessor_config.json").write_text("{}")
    with pytest.raises(ValueError, match="not a CLAP model"): load_clap(other)
    (other / "config.json").write_text(json.dumps({"model_type": "clap"}))  # says CLAP, holds no weights
    with pytest.raises(ValueError, match="cannot load the CLAP model"): load_clap(other)
    (other / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a model config"): load_clap(other)



def test_hub_ids(tmp_path, clap_dir, hub, monkeypatch):
    "`hf:ORG/NAME` and a bare `ORG/NAME` are read from the Hugging Face cache (offline here: a cache laid out by hand)."
    from conftest import fake_hub
    fake_hub(hub, "org/tiny-clap", clap_dir)
    monkeypatch.chdir(tmp_path)  # no local folder called org/tiny-clap
    x = [torch.sin(torch.arange(SAMPLE_RATE) / 7.0)]
    a, b = ClapEmbedder.load("hf:org/tiny-clap"), ClapEmbedder.load("org/tiny-clap")
    assert a.label == b.label == "CLAP: org/tiny-clap"
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), ClapEmbedder.load(clap_dir)(x))
    with pytest.raises(FileNotFoundError, match="org/missing"): load_clap("org/missing")

# the evaluation harness and the command -----------------------------------------------------------------------------

def test_evaluate_with_clap(split, scorer, clap_dir):
    emb = ClapEmbedder.load(clap_dir, batch_size=1)  # batch of one: the reference embeddings come in two batches
    res = evaluate([OracleSystem(), SilenceSystem()], split, scorer, progress=False, embedder=emb)
    assert res["embeddings"] == f"CLAP: {clap_dir}" and len(res["reference_embeddings"]) == 2
    assert all(len(e) == 8 for e in res["reference_embeddings"])
    s = summarize(res)
    assert s["oracle"]["story"]["kad"] < 0 < s["silence"]["story"]["kad"]  # the truth against itself; silence is far
    assert s["oracle"]["story"]["fad"] == pytest.approx(0.0, abs=1e-6) and s["silence"]["story"]["fad"] > 0
    story = format_tables(s).split("## Story generation")[1].split("##")[0]
    assert f"| KAD (lower; CLAP: {clap_dir}) | FAD (lower; CLAP: {clap_dir}) |" in story
    assert "not comparable with papers" not in story
    default = format_tables(summarize(evaluate([OracleSystem()], split, scorer, dialogues=1, progress=False)))
    assert f"| KAD (lower; {SCORER_EMBEDDINGS}) | FAD (lower; {SCORER_EMBEDDINGS}) |" in default


def test_cli_clap(split, scorer, clap_dir, tmp_path, capsys):
    scorer.save(tmp_path / "scorer")
    out = tmp_path / "eval"
    assert eval_main(["--baselines", "oracle,noise", "--split", str(split), "--out", str(out), "--scorer", str(tmp_path / "scorer"),
                      "--no-progress", "--clap", str(clap_dir)]) == 0  # --clap alone implies --embeddings clap
    doc = json.loads((out / "results.json").read_text())
    assert doc["meta"]["embeddings"] == f"CLAP: {clap_dir}"
    assert doc["summary"]["noise"]["story"]["embeddings"] == f"CLAP: {clap_dir}"
    assert doc["summary"]["noise"]["story"]["kad"] > 0 and doc["summary"]["noise"]["story"]["fad"] > 0
    assert f"KAD (lower; CLAP: {clap_dir})" in (out / "tables.md").read_text()
    assert (out / "plots" / "story_kad.png").stat().st_size > 0
    assert f"KAD (lower; CLAP: {clap_dir})" in capsys.readouterr().out


def test_cli_bad_clap(split, tmp_path, capsys):
    missing = tmp_path / "no-such-clap"
    assert cli_main(["eval", "--baselines", "oracle", "--split", str(split), "--embeddings", "clap", "--clap", str(missing)]) == 1
    err = capsys.readouterr().err
    assert str(missing) in err and err.strip().count("\n") == 0  # one line that names the path
    assert cli_main(["eval", "--baselines", "oracle", "--split", str(split), "--clap", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert str(tmp_path) in err and err.strip().count("\n") == 0
    assert cli_main(["eval", "--baselines", "oracle", "--split", str(split), "--embeddings", "scorer", "--clap", str(missing)]) == 1
    assert "--embeddings clap" in capsys.readouterr().err
