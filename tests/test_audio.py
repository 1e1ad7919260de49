"""Bad input and reference checks for audiochat.core.audio."""
import math

import numpy as np
import pytest
import soundfile as sf
import torch

from audiochat.core.audio import (
    SAMPLE_RATE,
    AudioError,
    check_audio,
    load_audio,
    loudness,
    mel_spectrogram,
    normalize_loudness,
    pan,
    save_audio,
)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="audio file not found"):
        load_audio(tmp_path / "nope.wav")


def test_unreadable_format(tmp_path):
    p = tmp_path / "fake.wav"
    p.write_bytes(b"RIFF\x00\x00garbage" * 10)
    with pytest.raises(AudioError, match="not a supported audio format"):
        load_audio(p)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.wav"
    sf.write(p, np.zeros((0, 2), dtype="float32"), SAMPLE_RATE)
    with pytest.raises(AudioError, match="is empty"):
        load_audio(p)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_samples(tmp_path, bad):
    x = torch.zeros(2, 100)
    x[1, 7] = bad
    with pytest.raises(AudioError, match="1 NaN/inf"):
        check_audio(x)
    p = tmp_path / "nan.wav"
    sf.write(p, x.T.numpy(), SAMPLE_RATE, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN/inf"):
        load_audio(p)


def test_round_trip_resample_and_channels(tmp_path):
    sr = 22_050
    t = torch.arange(sr) / sr
    x = 0.3 * torch.sin(2 * math.pi * 300 * t)[None]
    p = save_audio(tmp_path / "a.flac", x, sr=sr)
    y = load_audio(p, channels=2)
    assert y.shape == (2, SAMPLE_RATE)
    assert torch.equal(y[0], y[1])
    # resampling a 300 Hz tone keeps its level
    assert abs(y[0].pow(2).mean().sqrt().item() - 0.3 / math.sqrt(2)) < 5e-3


def test_mel_matches_torchaudio_directly():
    import torchaudio
    x = torch.randn(1, SAMPLE_RATE)
    ref = torchaudio.transforms.AmplitudeToDB("power", top_db=80)(
        torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=1024, hop_length=256, n_mels=80)(x))
    assert torch.allclose(mel_spectrogram(x), ref)


def test_loudness_pink_noise_reference():
    # pyloudnorm is the reference; our short-clip fallback must agree with it on a steady signal
    g = torch.Generator().manual_seed(0)
    x = 0.1 * torch.randn(2, SAMPLE_RATE * 3, generator=g)
    long = loudness(x)
    short = loudness(x[:, : SAMPLE_RATE // 5])  # 200 ms: below one gating block
    assert abs(long - short) < 0.5
    y = normalize_loudness(x, -30)
    assert abs(loudness(y) - (-30)) < 0.01


def test_pan_keeps_power():
    x = torch.randn(1, 1000)
    for p in np.linspace(-1, 1, 9):
        y = pan(x, float(p))
        assert torch.allclose(y.pow(2).sum(0), x[0].pow(2), atol=1e-5)
    with pytest.raises(ValueError, match="pan must be in"):
        pan(x, -1.01)
