"""The course's promises about its notebooks, checked on their committed outputs: each shows a figure, a player or a
table of what it measured, and each states a reading time that follows from its length."""
import json
import re
from pathlib import Path

import pytest

NBS = sorted((Path(__file__).parents[1] / "nbs").glob("[0-9]*.ipynb"))


def _cells(path: Path) -> list[dict]: return json.loads(path.read_text())["cells"]


def _shows(path: Path) -> set[str]:
    "What a notebook's committed outputs show: figure, player, table."
    kinds = set()
    for c in _cells(path):
        for o in c.get("outputs", []):
            data = o.get("data", {})
            html, markdown = "".join(data.get("text/html", "")), "".join(data.get("text/markdown", ""))
            text = "".join(o.get("text", "")) + "".join(data.get("text/plain", ""))
            if {"image/png", "image/jpeg", "image/svg+xml"} & set(data): kinds.add("figure")
            if "<audio" in html: kinds.add("player")
            if "<table" in html or re.search(r"^\|[-| :]+\|$", markdown + "\n" + text, re.M): kinds.add("table")
    return kinds


def reading_minutes(path: Path) -> float:
    "Prose at 200 words a minute; code, and the text it printed, at 15 lines a minute."
    cells = _cells(path)
    words = sum(len("".join(c["source"]).split()) for c in cells if c["cell_type"] == "markdown")
    code = [c for c in cells if c["cell_type"] == "code"]
    lines = sum(len("".join(c["source"]).splitlines()) for c in code)
    printed = sum(len("".join(o.get("text", "")).splitlines()) for c in code for o in c.get("outputs", []))
    return words / 200 + (lines + printed) / 15


@pytest.mark.parametrize("path", NBS[1:], ids=lambda p: p.stem)  # 00_index is the map, not a lesson
def test_every_lesson_shows_what_it_measured(path):
    assert _shows(path), f"{path.name} has no figure, player or table in its committed output"


@pytest.mark.parametrize("path", NBS[1:], ids=lambda p: p.stem)
def test_stated_reading_time_follows_from_the_length(path):
    md = ["".join(c["source"]) for c in _cells(path) if c["cell_type"] == "markdown"]
    before = next(s for s in md if s.startswith("**Before you start.**"))
    stated = int(re.search(r"Reading: about (\d+) minutes", before).group(1))
    assert abs(stated - reading_minutes(path)) <= 5, (stated, round(reading_minutes(path), 1))
