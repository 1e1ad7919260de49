"""The web app (`audiochat serve`): a page served with a tiny run on a free local port and driven by `gradio_client`
as a browser drives it (tell; plan, change the plan, render; understand an upload; bad input as one-line errors;
one conversation per browser), `audiochat serve --help` without torch or Gradio, and a screenshot by headless
Chromium. Only invariants are asserted: a barely trained model writes any scene."""
import subprocess
import sys

import pytest
import soundfile as sf
import torch

from audiochat.core.scene import Scene

# pandas warnings raised inside gradio's queue, not by this project
pytestmark = [pytest.mark.filterwarnings("ignore:.*no_silent_downcasting"), pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")]

FRAME = 1 / 40  # seconds per latent frame
HAND_WRITTEN = '{"duration":1.5,"sources":[{"id":"fx1","kind":"sfx","caption":"steady rain falling","start":0,"end":1.5}]}'


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from audiochat.training.train import train_tiny_run
    # no examples answered in words: every edit here makes audio
    return train_tiny_run(tmp_path_factory.mktemp("app") / "run", steps=4, overrides=["--data.refusals=0"])


@pytest.fixture(scope="module")
def server(run):
    pytest.importorskip("gradio", reason="the web app needs the ui extra: pip install 'audiochat[ui]'")
    from audiochat.serve.app import free_port, serve
    app = serve(run, host="127.0.0.1", port=free_port(), steps=2, block=False, quiet=True)
    yield app
    app.close()


@pytest.fixture
def client(server):
    "A new client: a new browser, with a conversation of its own."
    from gradio_client import Client
    return Client(server.local_url, verbose=False)


def _seconds(path) -> float:
    info = sf.info(str(path))
    return info.frames / info.samplerate


def _scene_of_audio(scene_json: str, wav) -> Scene:
    "The scene, after checking that the wav lasts as long as it, to within a latent frame."
    scene = Scene.from_json(scene_json)
    assert abs(_seconds(wav) - scene.duration) <= FRAME + 1e-9
    return scene


def _error(client, *inputs, api_name: str) -> str:
    from gradio_client.exceptions import AppError
    with pytest.raises(AppError) as err: client.predict(*inputs, api_name=api_name)
    return str(err.value)


def test_tell(client):
    scene_json, wav, figure, status = client.predict("A short story: a bell rings in the rain.", api_name="/tell")
    assert isinstance(scene_json, str) and isinstance(status, str) and status.startswith("tell: ")
    _scene_of_audio(scene_json, wav)
    assert isinstance(figure, dict) and figure["plot"].startswith("data:image/png")


def test_plan_change_render(client, server):
    client.predict("A short story: a dog barks.", api_name="/tell")
    planned, status = client.predict("Make the dog quieter.", None, api_name="/plan")
    assert status.startswith("edit: planned")
    wav, figure, status = client.predict(planned, api_name="/render")  # the model's own plan
    _scene_of_audio(planned, wav)
    assert status.startswith("edit: ")
    client.predict("Add rain.", None, api_name="/plan")
    assert "the scene is not valid" in _error(client, '{"duration": 4, "sources": [', api_name="/render")
    assert "the scene is not valid" in _error(client, HAND_WRITTEN.replace('"end":1.5}', '"end":9}'), api_name="/render")
    wav, figure, status = client.predict(HAND_WRITTEN, api_name="/render")  # the plan waited for a valid scene
    assert sf.info(wav).frames == round(1.5 / FRAME) * round(sf.info(wav).samplerate * FRAME)
    assert _scene_of_audio(HAND_WRITTEN, wav).duration == 1.5
    assert "plan a story or an edit first" in _error(client, HAND_WRITTEN, api_name="/render")  # rendered once


def test_understand_an_upload(client, tmp_path):
    from gradio_client import handle_file

    from audiochat.core.audio import save_audio
    from audiochat.serve.app import SCENE_COLUMNS
    wav = save_audio(tmp_path / "noise.wav", 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0)))
    table, scene_json, status = client.predict(handle_file(str(wav)), api_name="/understand")
    scene = Scene.from_json(scene_json)
    assert table["headers"] == SCENE_COLUMNS and len(table["data"]) == len(scene.sources)
    assert status.startswith("understand: ")
    planned, status = client.predict("Make it quieter.", None, api_name="/plan")
    assert status.startswith("edit: ")  # the uploaded file is the conversation's audio
    (tmp_path / "notes.wav").write_text("these are not samples")
    message = _error(client, handle_file(str(tmp_path / "notes.wav")), api_name="/understand")
    assert "not a supported audio format" in message and "\n" not in message


def test_bad_input_is_one_line(client):
    for inputs, api_name, words in ((("  ",), "/tell", "type a request first"), (("", None), "/plan", "type a request first"),
                                    ((None,), "/understand", "upload an audio file first"),
                                    ((HAND_WRITTEN,), "/render", "plan a story or an edit first")):
        message = _error(client, *inputs, api_name=api_name)
        assert words in message and "\n" not in message and "Traceback" not in message


def test_each_browser_has_its_own_conversation(server):
    from gradio_client import Client
    one, two = Client(server.local_url, verbose=False), Client(server.local_url, verbose=False)
    one.predict("A short story: a bell rings.", api_name="/tell")
    assert one.predict("Make the bell louder.", None, api_name="/plan")[1].startswith("edit: ")
    assert two.predict("Make the bell louder.", None, api_name="/plan")[1].startswith("tell: ")  # no story here yet
    one.predict(api_name="/reset")
    assert one.predict("Make the bell louder.", None, api_name="/plan")[1].startswith("tell: ")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_serve_help_loads_neither_torch_nor_gradio():
    r = _python("import sys\nfrom audiochat.cli import main\n"
                "try: main(['serve', '--help'])\nexcept SystemExit: pass\n"
                "print(sorted(m for m in ('torch', 'gradio') if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert "--run" in r.stdout and "--port" in r.stdout and r.stdout.strip().splitlines()[-1] == "[]"


def test_serve_without_gradio_says_what_to_install(tmp_path):
    r = _python("import sys\nsys.modules['gradio'] = None  # as if it were not installed\n"
                f"from audiochat.cli import main\nsys.exit(main(['serve', '--run', {str(tmp_path)!r}]))")
    assert r.returncode == 1 and r.stderr.strip() == (
        "audiochat serve: error: the web app needs gradio, which is not installed: pip install 'audiochat[ui]'")


def test_screenshot(server, tmp_path):
    from audiochat.serve.app import find_browser, screenshot
    if find_browser() is None: pytest.skip("no Chromium on the PATH (Debian: apt-get install chromium): no screenshot taken")
    from PIL import Image
    png = screenshot(server.local_url, tmp_path / "app.png", size=(1280, 1000))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5_000
    image = Image.open(png)
    assert image.size == (1280, 1000) and len(image.convert("RGB").getcolors(1 << 16) or ()) > 8  # not a blank page
