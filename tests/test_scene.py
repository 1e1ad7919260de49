"""Property tests for the scene (the structured CoT): round trips and validation messages."""
import json

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audiochat.core.edits import SceneDiff, apply_edit, diff
from audiochat.core.scene import SCENE_SCHEMA, Scene, SceneError, Source, to_seglst

words = st.text(alphabet="abcdefghij klmnopqrstuvwxyz,.?!'", min_size=1, max_size=40).filter(lambda s: s.strip())
ids = st.from_regex(r"[A-Za-z0-9_-]{1,8}", fullmatch=True)


@st.composite
def sources(draw, id=None, duration=30.0):
    kind = draw(st.sampled_from(["speech", "sfx", "music"]))
    a = draw(st.integers(0, int(duration * 100) - 2))
    b = draw(st.integers(a + 1, int(duration * 100)))
    start, end = a / 100, b / 100
    kw = dict(id=id or draw(ids), kind=kind, start=start, end=end,
              loudness_db=draw(st.integers(-600, 0)) / 10, pan=draw(st.integers(-100, 100)) / 100)
    if kind == "speech":
        kw.update(speaker=draw(st.sampled_from(["narrator", "girl", "old man"])), text=draw(words),
                  emotion=draw(st.none() | st.sampled_from(["happy", "sad"])))
    else:
        kw.update(caption=draw(words))
    return Source(**kw)


@st.composite
def scenes(draw, duration=30.0):
    n = draw(st.integers(0, 6))
    names = draw(st.lists(ids, min_size=n, max_size=n, unique=True))
    return Scene(tuple(draw(sources(id=i, duration=duration)) for i in names), duration)


@settings(max_examples=200, deadline=None)
@given(scenes())
def test_serialise_parse_round_trip(scene):
    text = scene.to_json()
    back = Scene.from_json(text)
    assert back == scene
    assert back.to_json() == text  # canonical: one scene, one string
    jsonschema.validate(json.loads(text), SCENE_SCHEMA)  # the schema accepts what we write
    assert Scene.from_json(scene.to_json(indent=2)) == scene


@settings(max_examples=200, deadline=None)
@given(scenes(), scenes())
def test_diff_apply_round_trip(before, after):
    d = diff(before, after)
    assert apply_edit(before, d) == after
    assert diff(before, before).empty
    assert set(d.removed) == set(before.ids) - set(after.ids)
    assert {s.id for s in d.added} == set(after.ids) - set(before.ids)


@settings(max_examples=100, deadline=None)
@given(scenes())
def test_seglst_has_every_speech_source(scene):
    segs = to_seglst(scene)
    assert len(segs) == sum(s.kind == "speech" for s in scene.sources)
    assert all(s["start_time"] < s["end_time"] for s in segs)


BASE = dict(id="a", kind="sfx", start=0.0, end=1.0, caption="rain")


@pytest.mark.parametrize("change, message", [
    (dict(start=2.0), "source 'a'.end: must be greater than start"),
    (dict(start=-0.5), "source 'a'.start: must be >= 0"),
    (dict(pan=-1.2), "source 'a'.pan: must be in [-1, 1]"),
    (dict(loudness_db=-70), "source 'a'.loudness_db: must be in [-60, 0] LUFS"),
    (dict(loudness_db=float("nan")), "source 'a'.loudness_db: must be finite"),
    (dict(caption=None), "source 'a'.caption: is required"),
    (dict(caption="   "), "source 'a'.caption: must not be empty"),
    (dict(kind="speech", caption=None, speaker="girl"), "source 'a'.text: is required"),
    (dict(kind="speech", caption=None, text="hi"), "source 'a'.speaker: is required"),
    (dict(kind="speech", speaker="girl", text="hi"), "source 'a'.caption: is not allowed"),
    (dict(emotion="sad"), "source 'a'.emotion: is not allowed"),
    (dict(kind="voice"), "source 'a'.kind: must be one of speech, sfx, music"),
    (dict(id=""), ".id: must be 1-32 characters"),
    (dict(start=True), "source 'a'.start: must be a number"),
])
def test_invalid_sources_name_field_and_rule(change, message):
    with pytest.raises(SceneError) as e:
        Source(**{**BASE, **change})
    assert message in str(e.value)


@pytest.mark.parametrize("scene, message", [
    ({"sources": []}, "scene.duration: is required"),
    ({"duration": 0, "sources": []}, "scene.duration: must be in (0, 120]"),
    ({"duration": 500, "sources": []}, "scene.duration: must be in (0, 120]"),
    ({"duration": 5}, "scene.sources: must be a list"),
    ({"duration": 5, "sources": [], "title": "x"}, "scene.title: is not a scene field"),
    ({"duration": 5, "sources": [BASE, BASE]}, "source 'a'.id: must be unique"),
    ({"duration": 0.5, "sources": [BASE]}, "source 'a'.end: must be <= the scene duration"),
    ({"duration": 5, "sources": [{**BASE, "vol": 1}]}, "sources[0].vol: is not a source field"),
    ({"duration": 5, "sources": [{"id": "a", "kind": "sfx", "caption": "x", "end": 1}]}, "sources[0].start: is required"),
    ([1, 2], "scene: must be a JSON object"),
])
def test_invalid_scenes_name_field_and_rule(scene, message):
    with pytest.raises(SceneError) as e:
        Scene.from_dict(scene)
    assert message in str(e.value)


@pytest.mark.parametrize("text", ["", "{", "{'duration': 1}", '{"duration": 1, "sources": [}', "null"])
def test_malformed_json_is_a_scene_error(text):
    with pytest.raises(SceneError):
        Scene.from_json(text)


def test_schema_rejects_what_validation_rejects():
    bad = [
        {"duration": 5, "sources": [{**BASE, "kind": "voice"}]},
        {"duration": 5, "sources": [{**BASE, "pan": 3}]},
        {"duration": 5, "sources": [{**BASE, "caption": None, "kind": "speech", "speaker": "x"}]},
        {"duration": 5, "sources": [{**BASE, "text": "hello"}]},
        {"duration": 5, "sources": [{**BASE, "extra": 1}]},
    ]
    for d in bad:
        with pytest.raises(SceneError):
            Scene.from_dict(d)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(d, SCENE_SCHEMA)


def test_apply_edit_rejects_inconsistent_edits():
    s = Scene((Source(**BASE),), 5)
    with pytest.raises(SceneError, match="already in the scene"):
        apply_edit(s, SceneDiff(added=(Source(**BASE),)))
    with pytest.raises(SceneError, match="id 'zz' is not in the scene"):
        apply_edit(s, SceneDiff(changed={"zz": {"pan": (0.0, 1.0)}}))
