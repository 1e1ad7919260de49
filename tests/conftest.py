import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    "Tiny models: one torch thread is fastest, and on a shared 2-core CPU several threads spin against each other."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def split(tmp_path_factory):
    "A two-dialogue StoryGen-Eval-mini split, built once for the evaluation tests."
    from audiochat.sim.data import build_eval
    out = tmp_path_factory.mktemp("eval") / "split"
    build_eval(out, dialogues=2, progress=False)
    return out


@pytest.fixture(scope="session")
def scorer():
    "A quickly trained scorer: its figures are rough, enough to exercise every path."
    from audiochat.eval.scorer import scorer_examples, train_scorer
    model, _ = train_scorer(scorer_examples(range(12)), steps=60)
    return model


def fake_hub(cache, repo: str, folder, commit: str = "0123456789abcdef0123456789abcdef01234567") -> None:
    "Lay out `folder` as the Hugging Face Hub cache holds a downloaded repository: snapshots/<commit>/..., refs/main."
    import shutil
    root = cache / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / commit)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    "An offline Hugging Face Hub whose cache is a temporary folder: what a user with HF_HUB_OFFLINE=1 has."
    import huggingface_hub.constants as C
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache)); monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(C, "HF_HUB_CACHE", str(cache)); monkeypatch.setattr(C, "HF_HUB_OFFLINE", True)
    return cache
