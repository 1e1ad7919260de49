"Edits in the diff form: the change applies to its scene, gives the change back, and the edit grammar admits it."
import json
import random

import pytest

from audiochat.core.edits import Edit
from audiochat.core.scene import Scene, SceneError
from audiochat.model.grammar import (
    ANSWER_GRAMMAR,
    EditGrammar,
    edit_pattern,
    fresh_id,
    known_vocabulary,
)
from audiochat.sim.copilot import assistant_plan
from audiochat.sim.stories import SUBTASKS, plan_edit, random_story

BUILTIN = ["add", "remove", "replace", "loudness", "move", "pan"]


def _edits(n=60):
    "(before, after, subtask, request) of template edits over many seeds, every built-in subtask."
    out = []
    for seed in range(n):
        rng = random.Random(seed)
        before = random_story(rng)
        for sub in BUILTIN:
            try: after, request = plan_edit(before, sub, rng)
            except ValueError: continue  # nothing to edit that way in this scene
            out.append((before, after, sub, request))
    return out


EDITS = _edits()


def test_every_subtask_is_covered():
    assert {e[2] for e in EDITS} == set(BUILTIN) and set(BUILTIN) <= set(SUBTASKS)


@pytest.mark.parametrize("k", range(0, len(EDITS), 7))
def test_a_template_edit_is_its_own_change(k):
    before, after, sub, request = EDITS[k]
    edit = Edit.between(before, after, sub, request)
    assert edit.subtask == sub and edit.changes is None  # a built-in form, never the general diff
    assert before.apply(Edit.from_json(edit.to_json())) == after  # applied in code, it gives the true scene
    assert Edit.between(before, before.apply(edit), sub, request).to_json() == edit.to_json()


def test_relative_numbers_are_the_ones_said():
    for before, after, sub, request in EDITS:
        e = Edit.between(before, after, sub, request)
        if "shift" in e.values:
            assert f"{abs(e.values['shift']):g} s" in request or f"{abs(e.values['shift']):g} seconds" in request
        if "gain_db" in e.values:
            assert f"{abs(e.values['gain_db']):g} dB" in request


def test_the_edit_grammar_admits_every_true_edit_and_only_present_ids():
    vocab = known_vocabulary()
    for before, after, sub, request in EDITS[::3]:
        text = Edit.between(before, after, sub, request).to_json().encode()
        g = EditGrammar(before, edit_pattern(before, **vocab))
        assert g.complete(text), text
        assert all(g.viable(text[:i]) for i in range(len(text)))
        missing = next(f"fx{n}" for n in range(1, 99) if f"fx{n}" not in before.ids)
        assert not g.viable(f'{{"edit":"remove","id":"{missing}"'.encode())
        assert not g.viable(f'{{"edit":"add","source":{{"id":"{before.ids[0]}"'.encode())
        assert g.viable(f'{{"edit":"add","source":{{"id":"{fresh_id(before)}"'.encode())


def test_answers_in_words_are_admitted_only_when_asked():
    before = EDITS[0][0]
    words = b'{"answer":"There is no dog in this story."}'
    assert EditGrammar(before, rf"(?:{edit_pattern(before)}|{ANSWER_GRAMMAR})").complete(words)
    assert not EditGrammar(before, edit_pattern(before)).viable(words[:5])


@pytest.mark.parametrize("bad,field", [
    ('{"edit":"remove","id":"nope"}', "'nope' is not in the scene"),
    ('{"edit":"loudness","id":"s1"}', "edit.gain_db: is required"),
    ('{"edit":"loudness","id":"s1","gain_db":99}', "edit.gain_db: must be in"),
    ('{"edit":"pan","id":"s1","pan":-1.5}', "edit.pan"),
    ('{"edit":"move","id":"s1"}', "exactly one of start"),
    ('{"edit":"add","source":{"id":"s1","kind":"sfx","start":0,"end":1,"caption":"rain"}}', "already in the scene"),
    ('{"edit":"add","source":{"id":"fx9","kind":"sfx","start":0,"end":1}}', "source 'fx9'.caption: is required"),
    ('{"edit":"remove"}', "edit.id"), ('{"id":"s1"}', "edit.edit"), ("not json", "edit: is not valid JSON"), ("[]", "edit: must be a JSON object"),
])
def test_bad_edits_name_the_field(bad, field):
    scene = EDITS[0][0]
    with pytest.raises(SceneError, match=None) as e: scene.apply(Edit.from_json(bad))
    assert field in str(e.value)


def test_both_forms_of_a_turn():
    before, after, sub, request = next(e for e in EDITS if e[2] == "loudness")
    text, tool = assistant_plan(before, after, request, sub, "diff")
    assert json.loads(text)["edit"] == "loudness" and Scene.from_json(tool) == after and len(text) < len(tool) / 3
    assert assistant_plan(before, after, request, sub, "scene") == (after.to_json(), "")
