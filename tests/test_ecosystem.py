"""The project in the Hugging Face / Gradio world: light imports, a `datasets` export, Hub ids, run bundles.
No network: the Hub is a local cache built by the tests, with HF_HUB_OFFLINE=1."""
import subprocess
import sys


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
