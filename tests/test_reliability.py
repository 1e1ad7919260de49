"""Reliability: bad input gets the error type of its layer (never a stray exception), nothing is lost when runs or
builds are killed or mixed, sizes are checked before work starts. docs/RELIABILITY.md lists the classes tried here.

The fuzzers run a fast subset by default and thousands of cases with `-m slow`."""
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiochat.scene import FIELD_ORDER, Scene, SceneError, Source

FAST, SLOW = 150, 3000
FUZZ = dict(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


# ---- the scene parser ----
VALID = {"duration": 8, "sources": [
    {"id": "s1", "kind": "speech", "speaker": "narrator", "text": "Once upon a time.", "start": 0.5, "end": 3, "loudness_db": -20},
    {"id": "rain", "kind": "sfx", "caption": "rain on a window", "start": 0, "end": 8, "pan": -0.4}]}

numbers = st.one_of(st.integers(), st.integers(min_value=10 ** 300, max_value=10 ** 400), st.floats(allow_nan=True, allow_infinity=True))
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=30))
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(st.one_of(st.sampled_from(FIELD_ORDER + ("duration", "sources")), st.text(max_size=8)), inner, max_size=5)),
                           max_leaves=20)


@st.composite
def mutated_scenes(draw):
    "The valid scene with some fields replaced by arbitrary JSON values, dropped or added."
    d = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 4))):
        target = draw(st.sampled_from(["scene", 0, 1]))
        srcs = d.get("sources")
        node = d if target == "scene" else (srcs[target] if isinstance(srcs, list) and len(srcs) > target else None)
        if not isinstance(node, dict): continue
        key = draw(st.sampled_from(sorted(node) + ["volume", "duration"]))
        action = draw(st.sampled_from(["replace", "drop"]))
        if action == "drop": node.pop(key, None)
        else: node[key] = draw(json_values)
    return d


def parse(obj):
    "Parse `obj` (text or dict); only a Scene or a SceneError may come out."
    try:
        s = Scene.from_json(obj) if isinstance(obj, (str, bytes)) else Scene.from_dict(obj)
    except SceneError as e:
        assert e.field and e.rule and len(str(e)) < 2000, str(e)[:300]
        return None
    assert isinstance(s, Scene) and all(isinstance(x, Source) for x in s.sources)
    assert Scene.from_json(s.to_json()) == s  # what parses, round-trips
    return s


def fuzz_scene_dicts(n):
    @settings(max_examples=n, **FUZZ)
    @given(st.one_of(mutated_scenes(), json_values))
    def run(d): parse(d)
    run()


def fuzz_scene_texts(n):
    @settings(max_examples=n, **FUZZ)
    @given(st.one_of(mutated_scenes().map(json.dumps), st.text(max_size=200),
                     st.builds(lambda s, k: s[:k], mutated_scenes().map(json.dumps), st.integers(0, 400))))
    def run(text): parse(text)
    run()


def test_scene_fuzz_fast():
    fuzz_scene_dicts(FAST); fuzz_scene_texts(FAST)


@pytest.mark.slow
def test_scene_fuzz_thousands():
    fuzz_scene_dicts(SLOW); fuzz_scene_texts(SLOW)


@pytest.mark.parametrize("text", [
    '{"duration": 1' + "0" * 400 + ', "sources": []}',  # a 400-digit duration (float overflow)
    '{"duration": 1' + "0" * 5000 + ', "sources": []}',  # past Python's int-string limit
    "[" * 100_000 + "]" * 100_000,  # nesting deeper than the recursion limit
    '{"duration": 4, "sources": [{"id": "a", "kind": "sfx", "caption": "x", "start": 0, "end": 1' + "0" * 400 + '}]}',
    '{"duration": 4, "sources": [{"id": ' + "[" * 50 + "]" * 50 + ', "kind": "sfx", "caption": "x", "start": 0, "end": 1}]}',
    '{"duration": 4, "sources": [{"id": "a", "kind": "speech", "speaker": "x", "text": "' + "a" * 100_000 + '", "start": 0, "end": 1}]}',
    b'{"duration": 4, "sources": [\xff]}', "", "null", '{"duration": NaN, "sources": []}',
])
def test_scene_hostile_inputs_are_scene_errors(text):
    with pytest.raises(SceneError) as e: Scene.from_json(text)
    assert len(str(e.value)) < 2000


def test_scene_errors_name_a_field():
    with pytest.raises(SceneError, match=r"^scene\.sources: must contain Source objects"): Scene((1, 2), 4)
    with pytest.raises(SceneError, match=r"^scene: must be JSON text"): Scene.from_json(123)
    with pytest.raises(SceneError, match="text: must be at most 2000 characters"):
        Source("s", "speech", 0, 1, speaker="x", text="word " * 1000)
