"""Story requests as people write them: every phrasing family is produced, every request is true to its scene, the
held-out families never reach the training dialogues, and the held-out split and the LLM task name their family."""
import random
from collections import Counter

import pytest

import audiochat.sim.copilot as copilot
from audiochat.core.scene import Scene, Source
from audiochat.sim.copilot import (
    TemplateLLM,
    UserSimulator,
    plan_dialogue,
    simulate_dialogue,
    story_task,
)
from audiochat.sim.requests import (
    FAMILIES,
    HELD_OUT_FAMILIES,
    REQUEST_FACETS,
    check_request,
    choose_family,
    held_out_stories,
    read_request,
    story_phrase,
)
from audiochat.sim.stories import random_story, seed_text


def training_request(i: int):
    rng = random.Random(i)
    text = seed_text(rng)
    scene = random_story(rng, text)
    return (*story_phrase(scene, text, rng), scene)


def test_every_family_is_produced_and_every_request_is_true_to_its_scene():
    seen = Counter()
    for i in range(600):
        request, family, scene = training_request(i)
        assert check_request(request, scene) is None, (i, request)
        seen.update(family.values())
    held = held_out_stories(40)
    for item in held:
        assert check_request(item["request"], Scene.from_dict(item["scene"])) is None, item["request"]
        seen.update(item["family"].split(" · "))
    assert set(seen) == set(FAMILIES) and min(seen.values()) >= 10, seen


def test_a_request_asks_what_its_scene_has():
    for i in range(200):
        request, family, scene = training_request(1000 + i)
        got = read_request(request)
        assert got["speakers"] == {s.speaker for s in scene.sources if s.kind == "speech"}
        if family["duration"] == "absent": assert got["seconds"] is None, request
        else: assert got["seconds"] == round(scene.duration), request  # the scene's duration is what was asked
        if family["lines"] in ("seed text", "quoted line"): assert got["quotes"], request
        if family["lines"] in ("described line", "left to the designer"): assert not got["quotes"], request


def test_check_request_catches_what_the_scene_lacks():
    scene = Scene((Source("s1", "speech", 0.5, 2.0, speaker="narrator", text="Hello there."),
                   Source("fx1", "sfx", 0.0, 6.2, caption="steady rain falling")), 6.2)
    assert check_request('Rain on a window. The narrator says "Hello there." About six seconds.', scene) is None
    assert "thunder" in check_request("Picture a storm. Just a narrator, nobody else.", scene)  # a storm is rain and thunder
    assert "'narrator'" in check_request('Heavy rainfall. A grandma says "Hello there."', scene)
    assert "Goodbye" in check_request('Heavy rainfall. A storyteller says "Goodbye."', scene)
    assert "asks for 9 s" in check_request("Heavy rainfall. Voices: narrator. Nine seconds.", scene)
    assert "rain" in check_request("Voices: narrator.", scene)


class Recorded(TemplateLLM):
    "A TemplateLLM that keeps every instance, so a test can read the families it wrote."
    made = []
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        Recorded.made.append(self)


def test_held_out_families_never_reach_training_dialogues(monkeypatch):
    Recorded.made = []
    monkeypatch.setattr(copilot, "TemplateLLM", Recorded)
    for seed in range(300): plan_dialogue(seed, edits=0)
    families = [f for llm in Recorded.made for f in llm.families.values()]
    assert len(families) == 300
    used = Counter(v for f in families for v in f.values())
    assert not set(used) & set(HELD_OUT_FAMILIES)
    assert set(used) == set(FAMILIES) - set(HELD_OUT_FAMILIES)
    for seed in range(2):  # the rendered dialogues (the dataset builders' path) draw from the same families
        d = simulate_dialogue(seed, [], max_duration=6)
        (llm,) = Recorded.made[300 + seed:301 + seed]
        assert d.rejected is None and set(llm.families[d.turns[0].user].values()).isdisjoint(HELD_OUT_FAMILIES)


def test_dialogue_requests_are_deterministic():
    assert plan_dialogue(7, edits=1) == plan_dialogue(7, edits=1)
    assert plan_dialogue(7, edits=0)[0][0] != plan_dialogue(8, edits=0)[0][0]


def test_the_task_names_its_family_and_the_template_user_follows_it():
    text = "In a quiet kitchen, a shy librarian tells a secret."
    task = story_task(text)
    assert f'Seed text: "{text}"' in task and task == story_task(text)  # a family per request, the same for the same seed
    for held in HELD_OUT_FAMILIES:
        family = choose_family(random.Random(0), held)
        assert family[next(f for f, v in REQUEST_FACETS.items() if held in v)] == held and family["duration"] != "absent"
        assert f"Phrasing: {' · '.join(family.values())}." in story_task(text, family)
    family = dict(sounds="paraphrase", speakers="characters", lines="quoted line", duration="words", order="duration first")
    llm = TemplateLLM(0)
    request = UserSimulator(llm).story_request(text, family)
    assert llm.families[request] == family and check_request(request, llm.plans[request]) is None
    with pytest.raises(ValueError, match="held_out must be one of"):
        choose_family(random.Random(0), "paraphrase")


def test_held_out_items_have_the_free_form_fields():
    items = held_out_stories(6, seed=3)
    assert items == held_out_stories(6, seed=3) and items != held_out_stories(6, seed=4)
    for item in items:
        scene = Scene.from_dict(item["scene"])
        assert item["seconds"] == round(scene.duration) and item["speakers"] >= 1 and item["sfx"]
        assert read_request(item["request"])["seconds"] == item["seconds"]
