"""The project in the Hugging Face / Gradio world: light imports, a `datasets` export, Hub ids, run bundles.
No network: the Hub is a local cache built by the tests, with HF_HUB_OFFLINE=1."""
import subprocess
import sys
from pathlib import Path

import pytest


def _python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_light_imports():
    "Reading scenes and records loads neither torch, pyplot nor pyloudnorm; `audiochat data --help` needs no torch."
    out = _python(
        "import sys, audiochat.scene, audiochat.data, audiochat.cli as cli\n"
        "try: cli.main(['data', '--help'])\n"
        "except SystemExit: pass\n"
        "print(sorted(m for m in ('torch', 'matplotlib.pyplot', 'pyloudnorm') if m in sys.modules))")
    assert out.splitlines()[-1] == "[]"
    out = _python("import sys, audiochat.audio; print(sorted(m for m in ('matplotlib.pyplot', 'pyloudnorm') if m in sys.modules))")
    assert out == "[]"


def test_export_hf(tmp_path):
    "`audiochat data export --format hf` writes one row per turn; loaded back it matches the records, audio included."
    import io
    import json

    import datasets
    import soundfile as sf

    from audiochat.cli import main
    from audiochat.data import read_records

    samples = Path(__file__).parents[1] / "audiochat" / "data_samples" / "dialogues"
    assert main(["data", "export", "--format", "hf", "--data", str(samples), "--out", str(tmp_path / "hf")]) == 0
    ds = datasets.load_from_disk(str(tmp_path / "hf"))
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
    from audiochat.data import export_hf
    with pytest.raises(FileNotFoundError):
        export_hf(tmp_path, tmp_path / "out")
