"""The DAC-style VAE codec: shapes, exact lengths, save/load, loss values recomputed from scratch, bad input, CLI."""
import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from safetensors.torch import load_file

from audiochat.cli import main
from audiochat.codec.codecs import Codec, CodecConfig, codec_preset, gaussian_kl
from audiochat.codec.latents import encode_folder, load_latents
from audiochat.codec.training import (
    AudioCrops,
    CodecLoss,
    SpectralDistance,
    codec_checkpoint,
    evaluate_codec,
    list_audio_files,
    lowpass,
    si_sdr,
    synthesize_audio_folder,
    train_codec,
)
from audiochat.core.audio import AudioError, resample

AUDIOCHAT = Path(sys.executable).parent / "audiochat"
SMALL = dict(encoder_channels=4, decoder_channels=16, latent_dim=4)  # a narrow tiny codec: fast tests


@pytest.fixture(scope="module")
def codec():
    torch.manual_seed(0)
    return Codec(codec_preset("vae-tiny")).eval()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("audio")
    synthesize_audio_folder(d / "synthetic", files=2, seconds=1.0, speech=False)
    mono_8k = (0.2 * np.sin(2 * np.pi * 300 * np.arange(4000) / 8000)).astype("float32")
    (d / "nested" / "deeper").mkdir(parents=True)
    sf.write(str(d / "nested" / "deeper" / "mono-8k.flac"), mono_8k, 8000)
    (d / "notes.txt").write_text("not audio")
    (d / ".tmp-partial").mkdir(); sf.write(str(d / ".tmp-partial" / "half-written.wav"), mono_8k, 8000)  # hidden: skipped
    return d


def test_shapes(codec):
    c = codec.config
    with torch.inference_mode():
        z = codec.encode(torch.randn(2, 3 * c.sample_rate) * 0.1)
        assert z.shape == (120, 2 * c.latent_dim)  # 40 frames per second, stereo -> 2 x D per frame
        assert codec.decode(z).shape == (2, 120 * c.hop)
        zb = codec.encode(torch.randn(5, 2, 800) * 0.1)
        assert zb.shape == (5, 2, 32) and codec.decode(zb).shape == (5, 2, 800)


def test_channels_are_encoded_independently(codec):
    x = torch.randn(2, 1600) * 0.1
    y = x.clone(); y[1] = torch.randn(1600) * 0.1  # change only the right channel
    with torch.inference_mode():
        zx, zy = codec.encode(x), codec.encode(y)
    d = codec.config.latent_dim
    assert torch.equal(zx[:, :d], zy[:, :d]) and not torch.allclose(zx[:, d:], zy[:, d:])


@pytest.mark.parametrize("n", [1, 399, 400, 401, 1234, 16_001])
def test_exact_length_round_trip(codec, n):
    x = torch.randn(2, n) * 0.1
    with torch.inference_mode():
        z = codec.encode(x)
        assert z.shape[0] == math.ceil(n / 400)
        assert codec.reconstruct(x).shape == (2, n)
        assert codec.decode(z, length=n).shape == (2, n)
    with pytest.raises(ValueError, match="length must be"):
        codec.decode(z, length=z.shape[0] * 400 + 1)


def test_save_load_equality(codec, tmp_path):
    codec.save_pretrained(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    assert CodecConfig.from_dict(json.loads((tmp_path / "m" / "config.json").read_text())) == codec.config
    again = Codec.from_pretrained(tmp_path / "m")
    x = torch.randn(2, 3000) * 0.1
    with torch.inference_mode():
        assert torch.equal(again.encode(x), codec.encode(x))
        assert torch.equal(again.reconstruct(x), codec.reconstruct(x))
    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    assert set(weights) == set(codec.state_dict())


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="codec folder not found"):
        Codec.from_pretrained(tmp_path / "nothing" / "here")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a saved codec"):
        Codec.from_pretrained(tmp_path / "empty")
    Codec(codec_preset("vae-tiny", **SMALL)).save_pretrained(tmp_path / "small")
    config = json.loads((tmp_path / "small" / "config.json").read_text())
    (tmp_path / "small" / "config.json").write_text(json.dumps({**config, "latent_dim": 5}))
    with pytest.raises(ValueError, match="does not match config.json"):  # strict loading: weights must fit the config
        Codec.from_pretrained(tmp_path / "small")


def test_kl_value_against_formula():
    rng = np.random.default_rng(0)
    mean, std = rng.normal(size=(2, 2, 4, 6)), rng.uniform(0.2, 2.0, size=(2, 2, 4, 6))
    expected = np.mean(np.sum(0.5 * (mean ** 2 + std ** 2 - 1 - np.log(std ** 2)), axis=2))
    got = gaussian_kl(torch.tensor(mean), torch.tensor(std), dim=2).item()
    assert got == pytest.approx(expected, rel=1e-10)
    assert gaussian_kl(torch.zeros(1, 4, 3), torch.ones(1, 4, 3), dim=1).item() == 0.0


def _log_spectra_np(x, n_fft, fbank=None):
    "Centred, reflect-padded, periodic-Hann STFT magnitudes (frames, bins) in NumPy, optionally through a mel matrix."
    pad = n_fft // 2
    xp = np.pad(x, pad, mode="reflect")
    hop = n_fft // 4
    frames = 1 + (len(xp) - n_fft) // hop
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    spec = np.abs(np.fft.rfft(np.stack([xp[i * hop:i * hop + n_fft] * window for i in range(frames)]), axis=-1))
    if fbank is not None: spec = spec @ fbank
    return np.log10(np.maximum(spec, 1e-5))


def test_loss_values_against_numpy():
    config = codec_preset("vae-tiny", kl_weight=0.01, mel_weight=2.0, stft_weight=0.5)
    t, rng = np.arange(8000) / 16000, np.random.default_rng(0)
    # tones over a noise floor: every bin well above float32 rounding, so float32 and float64 logs agree
    x = (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * np.sin(2 * np.pi * 3000 * t) + 0.01 * rng.normal(size=t.size)).astype(np.float32)
    y = (0.2 * np.sin(2 * np.pi * 450 * t + 0.3) + 0.02 * rng.normal(size=t.size)).astype(np.float32)
    mel, stft = [], []
    for w, m in zip(config.mel_windows, config.mel_bins):
        fb = torchaudio.functional.melscale_fbanks(w // 2 + 1, 0.0, 8000.0, m, 16000).double().numpy()
        mel.append(np.abs(_log_spectra_np(y.astype(float), w, fb) - _log_spectra_np(x.astype(float), w, fb)).mean())
    for w in config.stft_windows:
        stft.append(np.abs(_log_spectra_np(y.astype(float), w) - _log_spectra_np(x.astype(float), w)).mean())
    kl = torch.tensor(3.5)
    terms = CodecLoss(config)(torch.tensor(x)[None, None], torch.tensor(y)[None, None], kl)
    assert terms["mel"].item() == pytest.approx(np.mean(mel), rel=1e-4)
    assert terms["stft"].item() == pytest.approx(np.mean(stft), rel=1e-4)
    assert terms["total"].item() == pytest.approx(2.0 * np.mean(mel) + 0.5 * np.mean(stft) + 0.01 * 3.5, rel=1e-4)


def test_spectral_distance_zero_for_identical_and_grows_with_difference():
    d = SpectralDistance()
    x = torch.randn(1, 2, 8000) * 0.1
    assert d.mel(x, x).item() == 0.0 and d.stft(x, x).item() == 0.0
    assert d.mel(x, x * 0.9) < d.mel(x, x * 0.3) < d.mel(x, torch.zeros_like(x))


def test_si_sdr_against_formula():
    rng = np.random.default_rng(1)
    s, e = rng.normal(size=(2, 5000)), rng.normal(size=(2, 5000))
    for ref, est in [(s, s + 0.3 * e), (s, 0.5 * s - 0.2 * e)]:
        ref0, est0 = ref - ref.mean(-1, keepdims=True), est - est.mean(-1, keepdims=True)
        a = (est0 * ref0).sum(-1, keepdims=True) / (ref0 ** 2).sum(-1, keepdims=True)
        expected = 10 * np.log10(((a * ref0) ** 2).sum(-1) / ((a * ref0 - est0) ** 2).sum(-1))
        np.testing.assert_allclose(si_sdr(torch.tensor(est), torch.tensor(ref)).numpy(), expected, rtol=1e-5)
    x, est = torch.tensor(s, dtype=torch.float32), torch.tensor(s + 0.3 * e, dtype=torch.float32)
    assert torch.allclose(si_sdr(3 * est + 0.1, x), si_sdr(est, x), atol=1e-4)  # invariant to scale and offset
    assert si_sdr(torch.zeros(1, 100), x[:1, :100]).item() == float("-inf")  # silence: nothing of the reference
    assert math.isnan(si_sdr(x[:1, :100], torch.zeros(1, 100)).item())  # silent reference: undefined


def test_wrong_sample_rate_is_resampled(codec):
    x8 = torch.randn(2, 8000) * 0.1  # one second at 8 kHz
    with torch.inference_mode():
        z = codec.encode(x8, sample_rate=8000)
        assert z.shape == (40, 32)
        assert torch.allclose(z, codec.encode(resample(x8, 8000, 16000)))
        assert codec.reconstruct(x8, sample_rate=8000).shape == (2, 16000)  # output at the codec's rate
    with pytest.raises(ValueError, match="sample_rate must be positive"):
        codec.encode(x8, sample_rate=0)


def test_mono_into_stereo_codec_is_duplicated(codec):
    mono = torch.randn(1, 1200) * 0.1
    with torch.inference_mode():
        z = codec.encode(mono)
        assert torch.equal(z, codec.encode(mono.expand(2, -1)))
        y = codec.reconstruct(mono)
    assert y.shape == (2, 1200) and torch.equal(y[0], y[1])
    mono_codec = Codec(codec_preset("vae-tiny", channels=1, **SMALL)).eval()
    with torch.inference_mode():  # stereo into a mono codec is averaged
        st = torch.randn(2, 800) * 0.1
        assert torch.equal(mono_codec.encode(st), mono_codec.encode(st.mean(0, keepdim=True)))


def test_bad_input_errors(codec):
    x = torch.randn(2, 1000) * 0.1
    x[1, 10] = float("nan"); x[0, 3] = float("inf")
    with pytest.raises(AudioError, match="2 NaN/inf samples"):
        codec.encode(x)
    with pytest.raises(AudioError, match="cannot take 3-channel"):
        codec.encode(torch.zeros(3, 100))
    with pytest.raises(AudioError, match="empty"):
        codec.encode(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="latents must be"):
        codec.decode(torch.zeros(10, 31))
    with pytest.raises(ValueError, match="NaN"):
        codec.decode(torch.full((10, 32), float("nan")))


def test_audio_folder_and_crops(folder):
    files = list_audio_files(folder)
    assert [f.name for f in files] == ["mono-8k.flac", "synthetic-000.wav", "synthetic-001.wav"]  # recursive, .txt ignored
    crops = AudioCrops(files, seconds=0.75, seed=3)
    batch = crops.batch(8)
    assert batch.shape == (8, 2, 12000) and torch.isfinite(batch).all()
    again = AudioCrops(files, seconds=0.75, seed=3).batch(8)
    assert torch.equal(batch, again)  # reproducible with the seed
    short = AudioCrops([files[0]], seconds=1.0).crop()  # 0.5 s of 8 kHz mono: resampled, duplicated, zero-padded
    assert short.shape == (2, 16000) and torch.equal(short[0], short[1]) and short[:, 8500:].abs().max() == 0

def test_audio_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="audio folder not found"):
        list_audio_files(tmp_path / "missing")
    (tmp_path / "a.txt").write_text("no audio here")
    with pytest.raises(FileNotFoundError, match="no .wav/.flac files"):
        list_audio_files(tmp_path)


def test_train_resume_and_adversarial(folder, tmp_path):
    config = codec_preset("vae-tiny", **SMALL, adversarial=True, discriminator_channels=4, batch_size=2, segment_seconds=0.25)
    state = train_codec(config, folder, tmp_path / "run", steps=2, progress=False, log_every=1)
    assert state["step"] == 2 and len(state["history"]) == 2
    assert {"mel", "stft", "kl", "adversarial", "features", "discriminator", "total"} <= set(state["history"][0])
    tensors = load_file(str(codec_checkpoint(tmp_path / "run") / "optimizer.safetensors"))
    assert any(k.startswith("discriminator_weights.") for k in tensors) and any(k.startswith("codec.") for k in tensors)
    state = train_codec(config, folder, tmp_path / "run", steps=3, resume=True, progress=False, log_every=1)
    assert state["step"] == 3 and len(state["history"]) == 3
    with pytest.raises(FileNotFoundError, match="no checkpoint to resume"):
        train_codec(config, folder, tmp_path / "none", steps=1, resume=True, progress=False)


def test_codec_runs_share_the_run_layout(folder, tmp_path):
    "out/checkpoints/step-N with `latest`; a new run refuses the folder; a folder of the older flat layout loads and resumes."
    config = codec_preset("vae-tiny", **SMALL, batch_size=2, segment_seconds=0.25, save_every=1)
    train_codec(config, folder, tmp_path / "run", steps=3, progress=False)
    ck = codec_checkpoint(tmp_path / "run")
    assert ck == tmp_path / "run" / "checkpoints" / "step-0000003"
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["latest", "step-0000002", "step-0000003"]
    loaded, latest = Codec.from_pretrained(tmp_path / "run").state_dict(), Codec.from_pretrained(ck).state_dict()
    assert all(torch.equal(loaded[k], latest[k]) for k in latest)
    with pytest.raises(FileExistsError, match="holds a codec run"):
        train_codec(config, folder, tmp_path / "run", steps=4, progress=False)
    flat = tmp_path / "flat"  # the layout codec folders had before: the checkpoint's files in the folder itself
    flat.mkdir()
    for f in ck.iterdir(): (flat / f.name).write_bytes(f.read_bytes())
    assert codec_checkpoint(flat) == flat and Codec.from_pretrained(flat).config == Codec.from_pretrained(ck).config
    state = train_codec(config, folder, flat, steps=4, resume=True, progress=False)
    assert state["step"] == 4 and codec_checkpoint(flat) == flat / "checkpoints" / "step-0000004"


def test_encode_folder_stats(folder, tmp_path):
    codec = Codec(codec_preset("vae-tiny", **SMALL)).eval()
    index = encode_folder(codec, folder, tmp_path / "cache", shard_files=2)
    assert len(index["shards"]) == 2 and len(index["files"]) == 3
    latents, mean, std = load_latents(tmp_path / "cache")
    assert latents["nested/deeper/mono-8k.flac"].shape == (20, 8)  # 0.5 s -> 20 frames of 2 x 4 dims
    every = torch.cat(list(latents.values())).double()
    assert torch.allclose(mean.double(), every.mean(0), atol=1e-5)
    assert torch.allclose(std.double(), every.std(0, unbiased=False), atol=1e-5)
    with pytest.raises(FileExistsError, match="already holds a latent cache"):
        encode_folder(codec, folder, tmp_path / "cache")


def test_evaluation_and_baselines(folder):
    codec = Codec(codec_preset("vae-tiny", **SMALL)).eval()
    result = evaluate_codec(codec, folder / "synthetic")
    m = result["metrics"]
    assert set(m) == {"codec", "silence", "low-pass 4 kHz"} and result["files"] == 2
    assert m["silence"]["si_sdr"] == float("-inf")
    assert m["low-pass 4 kHz"]["mel_distance"] < m["silence"]["mel_distance"]
    assert result["encode_rtf"] > 0 and result["decode_rtf"] > 0
    x = torch.sin(2 * torch.pi * 500 * torch.arange(16000) / 16000)[None]
    assert torch.allclose(lowpass(x, 1000), x, atol=1e-3) and lowpass(x, 400).abs().max() < 1e-3


def run(*args):
    return subprocess.run([str(AUDIOCHAT), *args], capture_output=True, text=True)


def test_cli_train_reload_encode(folder, tmp_path):
    out = tmp_path / "codec"
    r = run("codec", "train", "--preset", "tiny", "--data", str(folder), "--out", str(out), "--steps", "3",
            "--codec.batch_size=2", "--codec.segment_seconds", "0.25", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "saved codec to" in r.stdout
    assert json.loads((codec_checkpoint(out) / "trainer_state.json").read_text())["step"] == 3
    codec = Codec.from_pretrained(out)
    assert codec.config.batch_size == 2
    r = run("codec", "encode", "--model", str(out), "--data", str(folder), "--out", str(tmp_path / "latents"))
    assert r.returncode == 0, r.stderr
    latents, mean, std = load_latents(tmp_path / "latents")
    x, _ = sf.read(str(folder / "synthetic" / "synthetic-000.wav"), dtype="float32")
    with torch.inference_mode():
        assert torch.allclose(latents["synthetic/synthetic-000.wav"], codec.encode(torch.tensor(x.T)), atol=1e-5)
    err = io.StringIO()  # the error paths, in-process (same entry point, no interpreter start-up)
    with contextlib.redirect_stderr(err):
        assert main(["codec", "encode", "--model", str(out), "--data", str(folder), "--out", str(tmp_path / "latents")]) == 1
        assert main(["codec", "train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--steps", "1"]) == 1
        assert main(["codec", "train", "--data", str(folder), "--codec.nonsense=1", "--steps", "1"]) == 1
        assert main(["codec", "train", "--data", str(folder), "--set", "latent_dim=8", "--steps", "1"]) == 1  # the old syntax
        assert main(["codec", "eval", "--model", str(tmp_path / "none"), "--data", str(folder)]) == 1
        assert main(["codec", "train", "--data", str(folder), "--out", str(out), "--steps", "1"]) == 1  # a run is there
    for message in ("already holds a latent cache", "audio folder not found", "unknown codec config key",
                    "unknown codec config key --set", "codec folder not found", "holds a codec run"):
        assert message in err.getvalue()


# --- the mel codec (kind="mel"): a fixed log-mel front end, a PCA basis, Griffin-Lim or a learned iSTFT decoder ---
from audiochat.codec.codecs import MelCodec, dct_basis, fit_mel_codec, make_codec  # noqa: E402


@pytest.fixture(scope="module")
def mel(folder):
    m = make_codec(codec_preset("tiny", decoder="griffinlim", vocoder_dim=16, vocoder_layers=1)).eval()
    fit_mel_codec(m, list_audio_files(folder))
    return m


def test_dct_basis_matches_scipy():
    from scipy.fft import dct
    ref = dct(np.eye(80), norm="ortho", axis=0)[:16]
    assert np.allclose(dct_basis(80, 16).numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("decoder", ["griffinlim", "learned"])
@pytest.mark.parametrize("n", [1, 399, 400, 12_345])
def test_mel_codec_shapes_and_lengths(mel, decoder, n):
    m = make_codec(codec_preset("tiny", decoder=decoder, vocoder_dim=16, vocoder_layers=1)).eval()
    m.load_state_dict(mel.state_dict())  # the fitted basis; both decoders have the same tensors
    with torch.inference_mode():
        z = m.encode(torch.randn(2, n) * 0.1)
        assert z.shape == (math.ceil(n / 400), 32) and m.reconstruct(torch.randn(2, n) * 0.1).shape == (2, n)
        assert m.encode(torch.randn(3, 2, n) * 0.1).shape == (3, math.ceil(n / 400), 32)
        assert m.decode(torch.randn(3, 5, 32)).shape == (3, 2, 2000)


def test_mel_codec_fit_statistics_and_channels(mel, folder):
    "After the fit, every latent dim has zero mean and unit variance over the fitted frames; channels are encoded apart."
    z = []
    for f in list_audio_files(folder):
        from audiochat.core.audio import load_audio
        x = load_audio(f, 16000, channels=2)
        z.append(mel.to_latents(mel.log_mel(x)).reshape(-1, 16))
    z = torch.cat(z).double()
    assert torch.allclose(z.mean(0), torch.zeros(16, dtype=torch.double), atol=1e-3)
    assert torch.allclose(z.std(0), torch.ones(16, dtype=torch.double), atol=1e-2)
    with torch.inference_mode():
        x = torch.randn(2, 4000) * 0.1
        both, left = mel.encode(x), mel.encode(x[:1].expand(2, -1))
        assert torch.allclose(both[:, :16], left[:, :16], atol=1e-5)  # the left half depends on the left channel only


def test_mel_codec_save_load_and_errors(mel, tmp_path, folder):
    mel.save_pretrained(tmp_path / "mel")
    again = Codec.from_pretrained(tmp_path / "mel")
    x = torch.randn(2, 3000) * 0.1
    with torch.inference_mode():
        assert isinstance(again, MelCodec) and torch.equal(again.encode(x), mel.encode(x))
        assert torch.allclose(again.decode(again.encode(x)), mel.decode(mel.encode(x)), atol=1e-5)
    Codec(codec_preset("vae-tiny", **SMALL)).save_pretrained(tmp_path / "vae")
    with pytest.raises(ValueError, match="holds a 'vae' codec"): MelCodec.from_pretrained(tmp_path / "vae")
    with pytest.raises(ValueError, match="make_codec"): Codec(codec_preset("tiny"))
    cfg = json.loads((tmp_path / "mel" / "config.json").read_text())
    (tmp_path / "mel" / "config.json").write_text(json.dumps({**cfg, "n_mels": 64}))
    with pytest.raises(ValueError, match="does not match config.json"): Codec.from_pretrained(tmp_path / "mel")
    (tmp_path / "mel" / "config.json").write_text(json.dumps({**cfg, "kind": "wav"}))
    with pytest.raises(ValueError, match="kind must be"): Codec.from_pretrained(tmp_path / "mel")
    silent = tmp_path / "silent.wav"; sf.write(str(silent), np.zeros((16000, 2), "float32"), 16000)
    with pytest.raises(ValueError, match="silence"): fit_mel_codec(make_codec(codec_preset("tiny")), [silent])


def test_mel_codec_griffin_lim_keeps_the_sound(mel, folder):
    "A fitted mel codec with Griffin-Lim is far closer to the input than silence is (no training involved)."
    from audiochat.core.audio import load_audio
    x = load_audio(list_audio_files(folder)[0], 16000, channels=2)
    d = SpectralDistance()
    with torch.inference_mode(): y = mel.reconstruct(x)
    assert d.mel(y, x) < 0.5 * d.mel(torch.zeros_like(x), x)


def test_mel_codec_trains_its_decoder(folder, tmp_path):
    config = codec_preset("tiny", vocoder_dim=16, vocoder_layers=1, batch_size=2, segment_seconds=0.25)
    state = train_codec(config, folder, tmp_path / "mel", steps=3, progress=False)
    assert state["step"] == 3 and 0 < state["pca"]["explained"] <= 1
    state = train_codec(config, folder, tmp_path / "mel", steps=4, resume=True, progress=False)
    assert state["step"] == 4
    gl = train_codec(codec_preset("tiny", decoder="griffinlim"), folder, tmp_path / "gl", steps=100, progress=False)
    assert gl["step"] == 0 and isinstance(Codec.from_pretrained(tmp_path / "gl"), MelCodec)
