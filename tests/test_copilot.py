"""Agents and backends: the tool-calling loop, tool-call parsing, TemplateLLM stories and edits, the validation
filter, a tiny local transformers chat model, and an OpenAI-compatible server on 127.0.0.1."""
import dataclasses
import json
import random
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from audiochat.core.edits import diff
from audiochat.core.scene import Scene
from audiochat.sim.agents import (
    AgentError,
    ChatLLM,
    FunctionTools,
    OpenAILLM,
    TransformersLLM,
    assistant_message,
    parse_tool_calls,
    run_agent,
    tool_call,
)
from audiochat.sim.copilot import (
    SoundDesigner,
    TemplateLLM,
    UserSimulator,
    check_edit,
    rendered,
    silent_sources,
    simulate_dialogue,
)
from audiochat.sim.stories import SUBTASKS, plan_edit, random_story

DEMO = Scene.from_json((Path(__file__).parent.parent / "data_samples/demo/scene.json").read_text())


def adder():
    tools = FunctionTools()

    def add(a: float, b: float):
        "Add two numbers."
        return {"sum": a + b}
    tools.add(add, {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]})
    return tools


class Scripted(ChatLLM):
    def __init__(self, replies): self.replies, self.seen = list(replies), []

    def chat(self, messages, tools=None):
        self.seen.append((json.loads(json.dumps(messages)), tools))
        return self.replies.pop(0)


# ---------------------------------------------------------------- the loop
def test_loop_returns_bad_arguments_as_tool_errors_and_reaches_an_answer():
    llm = Scripted([assistant_message(tool_calls=[tool_call("add", {"a": 1}, "c1"), tool_call("mul", {"a": 1}, "c2")]),
                    assistant_message(tool_calls=[{"id": "c3", "type": "function", "function": {"name": "add", "arguments": "{bad"}}]),
                    assistant_message(tool_calls=[tool_call("add", {"a": 1, "b": 2}, "c4")]),
                    assistant_message("3")])
    new = run_agent(llm, [{"role": "user", "content": "1+2?"}], adder())
    results = [json.loads(m["content"]) for m in new if m["role"] == "tool"]
    assert "missing required argument(s) b" in results[0]["error"]
    assert "unknown tool 'mul'" in results[1]["error"] and "add" in results[1]["error"]
    assert "not valid JSON" in results[2]["error"]
    assert results[3] == {"sum": 3}
    assert new[-1] == {"role": "assistant", "content": "3"}
    # the model saw the tool schemas and every earlier result
    assert llm.seen[0][1][0]["function"]["name"] == "add"
    assert [m["tool_call_id"] for m in llm.seen[-1][0] if m["role"] == "tool"] == ["c1", "c2", "c3", "c4"]


def test_loop_step_limit_and_malformed_replies():
    forever = Scripted([assistant_message(tool_calls=[tool_call("add", {"a": 1, "b": 1}, f"c{i}")]) for i in range(5)])
    with pytest.raises(AgentError, match="step limit") as e:
        run_agent(forever, [{"role": "user", "content": "x"}], adder(), max_steps=4)
    assert e.value.reason == "step_limit" and len(e.value.messages) == 8
    with pytest.raises(AgentError, match="assistant message"):
        run_agent(Scripted(["plain text"]), [{"role": "user", "content": "x"}], adder())


@pytest.mark.parametrize("text, name, args, rest", [
    ('<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>', "add", {"a": 1, "b": 2}, ""),
    ('I will add.\n<tool_call>\n{"name": "add", "arguments": "{\\"a\\": 1}"}\n</tool_call>', "add", {"a": 1}, "I will add."),
    ('{"name": "add", "parameters": {"a": 5}}', "add", {"a": 5}, ""),
    ('[{"name": "add", "arguments": {}}, {"name": "sub", "arguments": {}}]', "add", {}, ""),
])
def test_parse_tool_calls(text, name, args, rest):
    content, calls = parse_tool_calls(text)
    assert content == rest and calls[0]["function"]["name"] == name
    assert json.loads(calls[0]["function"]["arguments"]) == args
    assert calls[0]["type"] == "function" and calls[0]["id"]


def test_parse_tool_calls_leaves_plain_text_and_flags_broken_calls():
    assert parse_tool_calls("The story is ready.") == ("The story is ready.", [])
    assert parse_tool_calls('{"scene": 1}') == ('{"scene": 1}', [])
    _, calls = parse_tool_calls("<tool_call>{not json</tool_call>")
    assert calls[0]["function"]["name"] == "invalid_tool_call"
    new = run_agent(Scripted([assistant_message(tool_calls=calls), assistant_message("ok")]), [{"role": "user", "content": "x"}], adder())
    assert "unknown tool 'invalid_tool_call'" in json.loads(new[1]["content"])["error"]


# ---------------------------------------------------------------- template model: stories and edits
def test_random_story_ranges_and_determinism():
    stories = [random_story(random.Random(i)) for i in range(150)]
    speakers = {len({s.speaker for s in sc.sources if s.kind == "speech"}) for sc in stories}
    effects = {sum(s.kind == "sfx" for s in sc.sources) for sc in stories}
    assert speakers == {1, 2, 3} and effects == {1, 2, 3, 4}
    assert all(5 <= sc.duration <= 15 for sc in stories)
    assert 0 < sum(any(s.kind == "music" for s in sc.sources) for sc in stories) < 150
    assert random_story(random.Random(7)) == random_story(random.Random(7)) != random_story(random.Random(8))
    with pytest.raises(ValueError, match="max_duration"):
        random_story(random.Random(0), max_duration=30)


@pytest.mark.parametrize("subtask", SUBTASKS)
def test_plan_edit_is_consistent_and_does_what_it_says(subtask):
    phrasings = set()
    for i in range(40):
        rng = random.Random(i)
        before = random_story(rng)
        after, instruction = plan_edit(before, subtask, rng)
        phrasings.add(instruction.split()[0])
        assert check_edit(before, after, subtask) is None, instruction
        d = diff(before, after)
        if subtask == "loudness":
            (i_, f), = d.changed.items()
            old, new = f["loudness_db"]
            assert f"{abs(new - old):g} dB" in instruction
            assert (new > old) == any(w in instruction for w in ("louder", " up ", "raise", "Boost", "boost"))
        if subtask == "pan":
            (i_, f), = d.changed.items()
            side = "left" if f["pan"][1] < 0 else "right" if f["pan"][1] > 0 else "centre"
            assert side in instruction
        if subtask == "add":
            assert f"{d.added[0].start:g}" in instruction
        for other in SUBTASKS:
            if other != subtask:
                assert check_edit(before, after, other) is not None
    assert len(phrasings) >= 3  # varied phrasings
    with pytest.raises(ValueError, match="unknown edit subtask"):
        plan_edit(DEMO, "reverse", random.Random(0))


def test_check_edit_rejects_extra_changes():
    after, _ = plan_edit(DEMO, "pan", random.Random(0))
    also = Scene(tuple(dataclasses.replace(s, loudness_db=s.loudness_db - 1) if s.id == "rain" else s for s in after.sources), after.duration)
    assert check_edit(DEMO, after, "pan") is None
    assert "exactly one changed source" in check_edit(DEMO, also, "pan") or "should change" in check_edit(DEMO, also, "pan")
    longer = Scene(after.sources, after.duration + 1)
    assert "duration changed" in check_edit(DEMO, longer, "pan")


def test_silent_sources():
    mix = torch.zeros(2, int(DEMO.duration * 16000))
    assert silent_sources(mix, DEMO) == DEMO.ids
    mix[:, : int(3.2 * 16000)] = 0.1
    assert silent_sources(mix, DEMO) == ["s2", "knock"]


def test_simulated_dialogue_is_deterministic_and_valid():
    a, b = simulate_dialogue(11, ["add", "move"], max_duration=6), simulate_dialogue(11, ["add", "move"], max_duration=6)
    assert a.rejected is None and [t.subtask for t in a.turns] == ["story", "add", "move"]
    assert [(t.user, t.scene) for t in a.turns] == [(t.user, t.scene) for t in b.turns]
    assert all(torch.equal(x.audio, y.audio) for x, y in zip(a.turns, b.turns))
    c = simulate_dialogue(12, ["add", "move"], max_duration=6)
    assert c.turns[0].user != a.turns[0].user
    for t, u in zip(a.turns, a.turns[1:]):
        assert check_edit(t.scene, u.scene, u.subtask) is None
    # the designer emitted real tool calls: clips for the story, then a render
    names = [c["function"]["name"] for m in a.turns[0].messages for c in (m.get("tool_calls") or [])]
    assert names[-1] == "render_scene" and {"text_to_speech", "text_to_audio"} <= set(names)
    assert a.turns[0].audio.shape == (2, round(a.turns[0].scene.duration * 16000))


def test_template_designer_repairs_its_mistake_after_a_tool_error():
    d = simulate_dialogue(5, [], mistake_rate=1.0)
    assert d.rejected is None
    errors = [json.loads(m["content"]) for m in d.turns[0].messages if m["role"] == "tool" and "error" in m["content"]]
    assert errors and "must be <= the scene duration" in errors[0]["error"]
    scene, result = rendered(d.turns[0].messages)
    assert scene == d.turns[0].scene and result["clip_id"].startswith("clip")


def test_rejections_by_reason():
    class Sloppy(TemplateLLM):  # pans every source when asked for an edit
        def _user(self, task):
            reply = super()._user(task)
            if "subtask" in task:
                sc = self.plans[reply["content"]]
                self.plans[reply["content"]] = Scene(tuple(dataclasses.replace(s, pan=-s.pan if s.pan else 0.5) for s in sc.sources), sc.duration)
            return reply

    class NeverRenders(ChatLLM):
        def chat(self, messages, tools=None): return assistant_message("Here is your story!")

    reasons = Counter()
    for seed in range(2):
        m = Sloppy(seed, 0.0, 6)
        reasons[simulate_dialogue(seed, ["remove"], user=m, designer=m, max_duration=6).rejected] += 1
    reasons[simulate_dialogue(0, [], user=TemplateLLM(0), designer=NeverRenders()).rejected] += 1
    reasons[simulate_dialogue(0, [], user=UserOnly(), designer=TemplateLLM(0)).rejected] += 1
    assert reasons == Counter({"inconsistent_edit": 2, "no_scene": 1, "agent_error": 1})


class UserOnly(ChatLLM):
    "A 'real' user the template designer cannot read."
    def chat(self, messages, tools=None): return assistant_message("Make me a spooky story with an owl.")


def test_user_simulator_and_designer_roles():
    llm = TemplateLLM(3)
    user = UserSimulator(llm)
    family = dict(sounds="caption list", speakers="voice names", lines="seed text", duration="seconds", order="story first")
    request = user.story_request("In a forest at night, a shy librarian hears a strange noise.", family)
    assert "shy librarian" in request and request in llm.plans
    from audiochat.sim.tools import Toolbox
    designer = SoundDesigner(llm, Toolbox(seed=3))
    new = designer.respond(request)
    assert new[-1]["role"] == "assistant" and "```json" in new[-1]["content"]
    assert designer.messages[0]["role"] == "system" and designer.messages[1]["content"] == request
    scene, _ = rendered(new)
    edit = user.edit_request(scene, "remove")
    new = designer.respond(edit)
    assert check_edit(scene, rendered(new)[0], "remove") is None


def test_unknown_subtask_is_an_error():
    with pytest.raises(ValueError, match="unknown edit subtask 'shuffle'"):
        simulate_dialogue(0, ["shuffle"])


# ---------------------------------------------------------------- (b) transformers backend, tiny local model
TEMPLATE = (
    "{%- if tools %}<|system|>Tools:\n{% for t in tools %}{{ t | tojson }}\n{% endfor %}"
    "Call a tool as <tool_call>{\"name\": ..., \"arguments\": {...}}</tool_call><|end|>\n{% endif %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'tool' %}<|tool|>{{ m.content }}"
    "{%- elif m.tool_calls %}<|assistant|>{% for c in m.tool_calls %}<tool_call>{{ {'name': c.function.name, 'arguments': c.function.arguments} | tojson }}</tool_call>{% endfor %}"
    "{%- else %}<|{{ m.role }}|>{{ m.content }}{%- endif %}<|end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.fixture(scope="module")
def tiny_chat_model(tmp_path_factory):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    corpus = ['<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>', "What is 1 + 2? The sum is 3.",
              '{"type": "function", "function": {"name": "add", "description": "Add two numbers."}}'] * 20
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=400, min_frequency=1, special_tokens=["<|end|>", "<|pad|>"])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|end|>", pad_token="<|pad|>")
    tok.chat_template = TEMPLATE
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, max_position_embeddings=2048, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-chat")
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_transformers_backend_renders_tools_and_runs_to_an_answer(tiny_chat_model):
    llm = TransformersLLM.from_pretrained(str(tiny_chat_model), max_new_tokens=6)
    tools = adder()
    prompt = llm.prompt([{"role": "user", "content": "What is 1 + 2?"}], tools.schemas())
    assert '"name": "add"' in prompt and prompt.endswith("<|assistant|>") and "What is 1 + 2?" in prompt
    # a random tiny model writes nonsense: the loop treats it as the final answer
    new = run_agent(llm, [{"role": "user", "content": "What is 1 + 2?"}], tools)
    assert len(new) == 1 and new[0]["role"] == "assistant" and isinstance(new[0]["content"], str)


def test_transformers_backend_parses_generated_tool_calls(tiny_chat_model):
    llm = TransformersLLM.from_pretrained(str(tiny_chat_model), max_new_tokens=6)
    replies = iter(['<tool_call>{"name": "add", "arguments": {"a": 1, "b": "x"}}</tool_call>',
                    '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>', "The sum is 3."])
    prompts = []

    def generate(input_ids, attention_mask=None, **kw):  # the model "writes" a given text, through the real tokenizer
        prompts.append(llm.tokenizer.decode(input_ids[0]))
        out = llm.tokenizer(next(replies) + "<|end|>", return_tensors="pt", add_special_tokens=False)["input_ids"]
        return torch.cat([input_ids, out], 1)
    llm.model.generate = generate
    new = run_agent(llm, [{"role": "user", "content": "What is 1 + 2?"}], adder())
    assert [m["role"] for m in new] == ["assistant", "tool", "assistant", "tool", "assistant"]
    assert "must be of type number" in json.loads(new[1]["content"])["error"]
    assert json.loads(new[3]["content"]) == {"sum": 3} and new[-1]["content"] == "The sum is 3."
    # earlier tool calls and results are rendered back into the prompt, arguments as JSON objects
    assert '<tool_call>{"name": "add", "arguments": {"a": 1, "b": 2}}</tool_call>' in prompts[-1]
    assert '<|tool|>{"sum": 3}' in prompts[-1]


def test_transformers_backend_needs_a_chat_template(tiny_chat_model):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(tiny_chat_model))
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        TransformersLLM(None, tok)


# ---------------------------------------------------------------- (c) OpenAI-compatible server on 127.0.0.1
class FakeServer:
    "A chat-completions endpoint that replays scripted assistant messages and records the requests."
    def __init__(self, replies):
        self.replies, self.requests = list(replies), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append((self.path, body))
                msg = outer.replies.pop(0)
                data = json.dumps({"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
                                   "choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls" if msg.get("tool_calls") else "stop"}],
                                   "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args): pass
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_openai_backend_against_a_local_server():
    server = FakeServer([assistant_message(tool_calls=[tool_call("add", {"a": 2}, "c1")]),
                         assistant_message(tool_calls=[tool_call("add", {"a": 2, "b": 3}, "c2")]),
                         {"role": "assistant", "content": "5"}])
    try:
        llm = OpenAILLM("tiny-model", base_url=server.url, temperature=0.0, seed=1)
        new = run_agent(llm, [{"role": "user", "content": "2+3?"}], adder())
    finally:
        server.close()
    assert new[-1]["content"] == "5" and json.loads(new[3]["content"]) == {"sum": 5}
    assert "missing required argument(s) b" in json.loads(new[1]["content"])["error"]
    path, body = server.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "tiny-model" and body["seed"] == 1
    assert body["tools"][0]["function"]["name"] == "add"
    assert [m["role"] for m in server.requests[-1][1]["messages"]] == ["user", "assistant", "tool", "assistant", "tool"]


def test_openai_designer_in_a_simulated_dialogue():
    "A served model as the sound designer with the real tools: a bad render is fixed, the dialogue passes the filter."
    bad = json.loads(DEMO.to_json())
    bad["sources"][0]["pan"] = 3
    server = FakeServer([assistant_message(tool_calls=[tool_call("text_to_audio", {"caption": "a dragon roaring", "duration": 2}, "a")]),
                         assistant_message(tool_calls=[tool_call("render_scene", {"scene": bad}, "b")]),
                         assistant_message(tool_calls=[tool_call("render_scene", {"scene": DEMO.to_json()}, "c")]),
                         {"role": "assistant", "content": "Here it is."}])
    try:
        d = simulate_dialogue(4, [], user=TemplateLLM(4), designer=OpenAILLM("m", base_url=server.url))
    finally:
        server.close()
    assert d.rejected is None and d.turns[0].scene == DEMO and d.turns[0].answer == "Here it is."
    errors = [json.loads(m["content"])["error"] for m in d.turns[0].messages if m["role"] == "tool" and "error" in m["content"]]
    assert "nearest known" in errors[0] and "pan" in errors[1]
    assert {t["function"]["name"] for t in server.requests[0][1]["tools"]} == {"text_to_speech", "text_to_audio", "text_to_music", "render_scene"}


def test_template_designer_gives_up_on_an_impossible_scene():
    class Rushed(TemplateLLM):  # plans a long line in a half-second span
        def _user(self, task):
            reply = super()._user(task)
            sc = self.plans[reply["content"]]
            s1 = next(s for s in sc.sources if s.kind == "speech")
            rushed = dataclasses.replace(s1, text="This line is much too long to be said in half a second.", end=round(s1.start + 0.5, 2))
            self.plans[reply["content"]] = Scene(tuple(rushed if s.id == s1.id else s for s in sc.sources), sc.duration)
            return reply
    m = Rushed(2)
    d = simulate_dialogue(2, [], user=m, designer=m, max_duration=6)
    assert d.rejected == "no_scene" and "make the span at least" in d.detail


def test_move_picks_a_source_that_can_move():
    from audiochat.core.scene import Scene, Source
    from audiochat.sim.copilot import check_edit
    from audiochat.sim.stories import plan_edit
    # the bed cannot start 0.5 s away from 0.3 s (it may start anywhere in [0, 0.7]); the knock can
    scene = Scene((Source("bed", "sfx", 0.3, 4.6, caption="steady rain"), Source("knock", "sfx", 1.0, 1.5, caption="door knock")), 5)
    for seed in range(40):
        after, text = plan_edit(scene, "move", random.Random(seed))
        assert check_edit(scene, after, "move") is None
        assert after["knock"].start != scene["knock"].start and abs(after["knock"].start - scene["knock"].start) >= 0.5
    stuck = Scene((Source("bed", "sfx", 0.3, 4.6, caption="steady rain"),), 5)
    with pytest.raises(ValueError, match="no source in this scene can move"):
        plan_edit(stuck, "move", random.Random(0))


def test_unplannable_edit_rejects_the_dialogue_instead_of_raising():
    "A scene with nothing to replace (its only sound was removed earlier): the dialogue is rejected, nothing is raised."
    speech = Scene((DEMO.sources[0],), DEMO.duration) if DEMO.sources[0].kind == "speech" else None
    speech = speech or Scene(tuple(s for s in DEMO.sources if s.kind == "speech"), DEMO.duration)
    with pytest.raises(ValueError, match="no sound effect or music in this scene to replace"): plan_edit(speech, "replace", random.Random(0))
    with pytest.raises(ValueError, match="no sound effect or music"): UserSimulator(TemplateLLM(0)).edit_request(speech, "replace")
    rejected = Counter(simulate_dialogue(seed, ["remove", "replace"]).rejected for seed in range(6))
    assert set(rejected) <= {None, "agent_error"}  # a story whose only sound was removed cannot get a replace: rejected


# ---------------------------------------------------------------- registering a new edit subtask

def _plan_shorten(scene, rng):
    long = [s for s in scene.sources if s.kind != "speech" and s.end - s.start >= 1.0]
    if not long: raise ValueError("no sound long enough to shorten")
    s = rng.choice(long)
    end = round(s.start + (s.end - s.start) / 2, 2)
    return Scene(tuple(dataclasses.replace(x, end=end) if x.id == s.id else x for x in scene.sources), scene.duration), f"Cut {s.caption} off at {end:g} s."


def _check_shorten(before, after):
    d = diff(before, after)
    if d.added or d.removed or len(d.changed) != 1: return "shorten: expected exactly one changed source"
    (i, fields), = d.changed.items()
    if set(fields) != {"end"} or after[i].end >= before[i].end: return f"shorten: {i!r} should only end earlier"
    return None


@pytest.fixture
def shorten():
    from audiochat.sim.copilot import register_subtask, unregister_subtask
    register_subtask("shorten", _plan_shorten, _check_shorten, help="make one sound stop earlier")
    try: yield "shorten"
    finally: unregister_subtask("shorten")


def test_registered_subtask_in_dialogues_and_filter(shorten):
    from audiochat.sim.copilot import edit_task
    assert SUBTASKS[-1] == "shorten"
    d = simulate_dialogue(3, ["shorten"])
    assert d.rejected is None and d.turns[1].subtask == "shorten"
    before, after = d.turns[0].scene, d.turns[1].scene
    assert check_edit(before, after, "shorten") is None
    assert "should only end earlier" in check_edit(after, before, "shorten")
    assert check_edit(before, after, "move") is not None
    assert "make one sound stop earlier" in edit_task(before, "shorten")
    # a designer that does a built-in edit when asked to shorten is filtered out
    class Wrong(TemplateLLM):
        def _user(self, task):
            reply = super()._user(task)
            if "subtask: shorten" in task:
                sc = self.plans[reply["content"]]
                self.plans[reply["content"]] = Scene(tuple(dataclasses.replace(x, pan=-x.pan if x.pan else 0.5) for x in sc.sources), sc.duration)
            return reply
    m = Wrong(3)
    assert simulate_dialogue(3, ["shorten"], user=m, designer=m).rejected == "inconsistent_edit"


def test_registered_subtask_default_check_and_training_draws():
    from audiochat.sim.copilot import register_subtask, unregister_subtask
    register_subtask("shorten", _plan_shorten)  # no check: one source changed is enough
    try:
        story = random_story(random.Random(0))
        after, instruction = plan_edit(story, "shorten", random.Random(0))
        assert check_edit(story, after, "shorten") is None and instruction.startswith("Cut ")
        assert "expected exactly one" in check_edit(story, story, "shorten")
        speech = Scene(tuple(s for s in story.sources if s.kind == "speech"), story.duration)
        with pytest.raises(ValueError, match="cannot edit this scene"): plan_edit(speech, "shorten", random.Random(0))
        never = lambda scene, rng: (_ for _ in ()).throw(ValueError("nothing to do"))
        register_subtask("never", never)
        try: d = simulate_dialogue(3, ["never"])
        finally: unregister_subtask("never")
        assert d.rejected == "agent_error" and "no 'never' edit is possible" in d.detail
        drawn = Counter(t.subtask for seed in range(12) for t in simulate_dialogue(seed, edits=2).turns[1:])
        assert drawn["shorten"] > 0  # training dialogues draw it like the built-in subtasks
    finally: unregister_subtask("shorten")
    assert "shorten" not in SUBTASKS and len(SUBTASKS) == 6
    with pytest.raises(ValueError, match="unknown edit subtask"): plan_edit(story, "shorten", random.Random(0))


def test_dataset_builder_accepts_registered_subtask(shorten, tmp_path):
    from audiochat.sim.data import DataConfig, build_shard, dialogue_subtasks, read_records
    config = DataConfig(split="eval", dialogues=7, shard_size=1, edits=1)
    assert dialogue_subtasks(config, 6) == ["shorten"]  # the evaluation split cycles through every subtask
    stats = build_shard(tmp_path, config, 6)
    assert stats["dialogues"] == 1 and stats["subtasks"] == {"story": 1, "shorten": 1}, stats
    (record,) = list(read_records(tmp_path))
    assert record["turns"][1]["subtask"] == "shorten"


@pytest.mark.parametrize("args, error, match", [
    (("pan", _plan_shorten), ValueError, "built-in"),
    (("story", _plan_shorten), ValueError, "built-in"),
    (("Echo!", _plan_shorten), ValueError, "lower-case"),
    (("echo", None), TypeError, "plan must be a function"),
    (("echo", "plan"), TypeError, "must be a function"),
])
def test_register_subtask_bad_input(args, error, match):
    from audiochat.sim.copilot import register_subtask
    with pytest.raises(error, match=match): register_subtask(*args)
    assert len(SUBTASKS) == 6


def test_registered_plan_must_return_scene_and_instruction():
    from audiochat.sim.copilot import register_subtask, unregister_subtask
    register_subtask("noop", lambda scene, rng: scene)
    try:
        with pytest.raises(TypeError, match="must return \\(Scene, non-empty instruction\\)"): plan_edit(DEMO, "noop", random.Random(0))
    finally: unregister_subtask("noop")
