"""Tokenizer: exact byte-level round trips, atomic special tokens, save/reload, pretrained Hugging Face path."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from audiochat.core.scene import Scene
from audiochat.model.tokenizer import (
    SPECIAL_TOKENS,
    add_special_tokens,
    dialogue_corpus,
    load_tokenizer,
    random_scene,
    special_token_ids,
    train_tokenizer,
)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(dialogue_corpus(300), vocab_size=1024)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_round_trip_arbitrary_unicode(tokenizer, text):
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    specials = set(special_token_ids(tokenizer).values())
    if not any(tok in text for tok in SPECIAL_TOKENS.values()):
        assert not specials & set(ids)  # ordinary text never yields a special id


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=20), st.sampled_from(list(SPECIAL_TOKENS))), max_size=12))
def test_special_tokens_atomic(tokenizer, parts):
    ids = special_token_ids(tokenizer)
    text = "".join(SPECIAL_TOKENS[p] if p in SPECIAL_TOKENS else p for p in parts)
    enc = tokenizer.encode(text)
    assert tokenizer.decode(enc) == text
    expected = [ids[p] for p in parts if p in SPECIAL_TOKENS]
    assert [i for i in enc if i in set(ids.values())] == expected  # one id per special token, in order


def test_special_ids_distinct_and_first(tokenizer):
    ids = special_token_ids(tokenizer)
    assert sorted(ids.values()) == list(range(len(SPECIAL_TOKENS)))
    assert tokenizer.convert_ids_to_tokens(ids["audio_start"]) == "<|audio_start|>"
    assert tokenizer.pad_token_id == ids["pad"]


def test_compact_json_is_efficient(tokenizer):
    rng = random.Random(99)
    texts = [random_scene(rng).to_json() for _ in range(50)]
    n_bytes = sum(len(t.encode()) for t in texts)
    n_tokens = sum(len(tokenizer.encode(t)) for t in texts)
    assert n_bytes / n_tokens > 2.5
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode('","kind":"')) == ['","', "kind", '":"']


def test_train_on_any_iterable():
    gen = (f"line {i} of a dialogue" for i in range(200))  # a generator, read once
    tok = train_tokenizer(gen, vocab_size=300)
    assert tok.decode(tok.encode("line 7 of a dialogue")) == "line 7 of a dialogue"
    assert len(tok) <= 300


def test_save_reload_equal(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    back = load_tokenizer(tmp_path)
    assert back.get_vocab() == tokenizer.get_vocab()
    assert special_token_ids(back) == special_token_ids(tokenizer)
    text = "<|bos|><|user|>Make the rain louder 🌧<|end_turn|><|assistant|>" + random_scene(random.Random(3)).to_json()
    assert back.encode(text) == tokenizer.encode(text)
    assert back.decode(back.encode(text)) == text


def _tiny_pretrained(tmp_path, **special):
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, "rain": 3, "door": 4, "knock": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", **special).save_pretrained(tmp_path)
    return len(vocab)


def test_pretrained_gets_special_tokens(tmp_path):
    n = _tiny_pretrained(tmp_path, bos_token="<s>", eos_token="</s>")
    tok = load_tokenizer(tmp_path)
    ids = special_token_ids(tok)
    assert (ids["bos"], ids["eos"]) == (1, 2)  # existing bos/eos kept
    assert len(tok) == n + 7  # pad + system/user/assistant/end_turn/audio_start/audio_end
    assert tok.encode("rain<|audio_start|>door <|audio_end|>") == [3, ids["audio_start"], 4, ids["audio_end"]]
    assert add_special_tokens(tok) == 0
    tok.save_pretrained(tmp_path / "again")
    again = load_tokenizer(tmp_path / "again")
    assert special_token_ids(again) == ids


def test_pretrained_without_bos_eos(tmp_path):
    n = _tiny_pretrained(tmp_path)
    tok = load_tokenizer(tmp_path)
    ids = special_token_ids(tok)
    assert tok.convert_ids_to_tokens([ids["bos"], ids["eos"]]) == ["<|bos|>", "<|eos|>"]
    assert len(tok) == n + 9


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        train_tokenizer(["x"], vocab_size=10)
    with pytest.raises(FileNotFoundError, match="tokenizer folder not found"):
        load_tokenizer(tmp_path / "missing")
    _tiny_pretrained(tmp_path)
    from transformers import AutoTokenizer
    with pytest.raises(KeyError, match="lacks special tokens"):
        special_token_ids(AutoTokenizer.from_pretrained(tmp_path))


def test_corpus_scenes_valid():
    texts = dialogue_corpus(30, seed=5)
    scenes = [Scene.from_json(t) for t in texts[1::3]]
    assert all(s.to_json() == t for s, t in zip(scenes, texts[1::3]))


def test_copilot_corpus():
    from audiochat.sim.copilot import copilot_corpus
    texts = copilot_corpus(3, seed=7)
    assert texts == copilot_corpus(3, seed=7)
    scenes = [t for t in texts if t.startswith('{"duration"')]
    assert len(scenes) >= 3 and all(Scene.from_json(t).to_json() == t for t in scenes)
    assert any(not t.startswith("{") for t in texts)  # the user's requests
    tok = train_tokenizer(texts, vocab_size=400)
    assert tok.decode(tok.encode(texts[0])) == texts[0]
