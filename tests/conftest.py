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
