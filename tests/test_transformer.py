"""The decoder stack against transformers (Llama, Qwen2), the mask by perturbation, the KV cache, bad inputs."""

import json
import logging

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audiochat.model.transformer import (
    DecoderLayer,
    KVCache,
    Layout,
    Rotary,
    Transformer,
    TransformerConfig,
    block_mask,
    build_mask,
    config_from_hf,
    greedy_generate,
    rope_frequencies,
    run_layers,
)

transformers = pytest.importorskip("transformers")
logging.getLogger("transformers").setLevel(logging.ERROR)


def randomise(model, seed=0):
    "Random values for every parameter (biases and norm gains included) so a wrong mapping cannot hide."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(
                torch.randn(p.shape, generator=g) * (0.1 if "norm" not in name else 0.3)
                + (1.0 if "norm" in name else 0.0)
            )
    return model.eval()


def tiny_hf(kind, tmp_path, **extra):
    shape = dict(
        vocab_size=97,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        **extra,
    )
    if kind == "llama":
        model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**shape))
    else:
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**shape))
    model = randomise(model)
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    model.save_pretrained(tmp_path)
    return model


CASES = [
    ("llama", {}),
    ("llama", {"tie_word_embeddings": True}),
    ("qwen2", {}),
    ("qwen2", {"tie_word_embeddings": True}),
    (
        "llama",
        {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
            }
        },
    ),
]


@pytest.mark.parametrize("kind,extra", CASES)
def test_same_logits_as_transformers(kind, extra, tmp_path):
    hf = tiny_hf(kind, tmp_path, **extra)
    ours = Transformer.from_hf(tmp_path).eval()
    assert ours.config.qkv_bias == (kind == "qwen2")
    tokens = torch.randint(
        0, 97, (2, 40), generator=torch.Generator().manual_seed(1)
    )  # > 16 positions: llama3 scaling matters
    with torch.no_grad():
        ref, got = hf(tokens).logits, ours(tokens)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_greedy_generation_matches_transformers(kind, tmp_path):
    hf = tiny_hf(kind, tmp_path)
    ours = Transformer.from_hf(tmp_path).eval()
    prompt = torch.randint(0, 97, (2, 7), generator=torch.Generator().manual_seed(2))
    ref = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=12, do_sample=False)
    got = greedy_generate(ours, prompt, 12, n_layers=ours.config.n_layers)
    assert torch.equal(got, ref)


def test_left_padded_prompt_generates_like_the_unpadded_one():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=50, n_layers=2)).eval()
    long, short = torch.randint(0, 50, (1, 8)), torch.randint(0, 50, (1, 5))
    batch = torch.cat([long, torch.cat([torch.zeros(1, 3, dtype=torch.long), short], 1)])
    pad = torch.zeros(2, 8, dtype=torch.bool)
    pad[1, :3] = True
    both = greedy_generate(model, batch, 6, 2, pad=pad)
    assert torch.equal(both[1, 8:], greedy_generate(model, short, 6, 2)[0, 5:])
    assert torch.equal(both[0, 8:], greedy_generate(model, long, 6, 2)[0, 8:])


def test_cache_in_chunks_equals_full_forward():
    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=50, n_layers=2)).eval()
    tokens = torch.randint(0, 50, (2, 11))
    cache = KVCache(2)
    parts = [model(tokens[:, :4], cache=cache), model(tokens[:, 4:9], cache=cache), model(tokens[:, 9:], cache=cache)]
    torch.testing.assert_close(torch.cat(parts, 1), model(tokens), atol=1e-5, rtol=1e-5)


def test_cached_audio_chunk_is_bidirectional_like_the_full_mask():
    "A whole audio span appended through the cache sees itself both ways, as in the full-sequence mask."
    torch.manual_seed(0)
    c = TransformerConfig(d_model=32, n_heads=4, n_kv_heads=2)
    layers, rot = torch.nn.ModuleList(DecoderLayer(c) for _ in range(2)).eval(), Rotary(c.head_dim)
    layout = Layout.from_segments([[("text", 5), ("audio", 6)]])
    x = torch.randn(1, 11, 32)
    full = run_layers(layers, x, rot(layout.positions()), build_mask(layout))
    cache = KVCache(2)
    outs = []
    for a, b in [(0, 5), (5, 11)]:
        part = layout.slice(a, b)
        mask, pos = cache.step_mask_and_positions(part)
        outs.append(run_layers(layers, x[:, a:b], rot(pos), mask, cache))
        cache.advance(part)
    torch.testing.assert_close(torch.cat(outs, 1), full, atol=1e-5, rtol=1e-5)


# ---- the mask, by perturbation ----


def stack(n_layers=2, d=32, seed=0):
    torch.manual_seed(seed)
    c = TransformerConfig(d_model=d, n_heads=4, n_kv_heads=2)
    return torch.nn.ModuleList(DecoderLayer(c) for _ in range(n_layers)).eval(), Rotary(c.head_dim)


def outputs(layers, rot, layout, x, flex=False):
    mask = block_mask(layout, block_size=16) if flex else build_mask(layout)
    with torch.no_grad():
        return run_layers(layers, x, rot(layout.positions()), mask)


def changed_by(layers, rot, layout, x, j, flex=False):
    "Bool (T,) of row 0: which outputs change when the input at position j changes."
    y = x.clone()
    y[0, j] += torch.randn(x.shape[-1]) * 3
    return (outputs(layers, rot, layout, x, flex) - outputs(layers, rot, layout, y, flex))[0].abs().amax(-1) > 1e-6


DIALOGUE = Layout.from_segments(
    [[("text", 4), ("audio", 5), ("text", 3), ("audio", 4), ("text", 2)]]
)  # spans 4-8, 12-15


def test_future_text_and_later_span_never_change_earlier_outputs():
    layers, rot = stack()
    x = torch.randn(1, 18, 32)
    ch = changed_by(layers, rot, DIALOGUE, x, 11)  # a text token after span 0
    assert not ch[:11].any() and ch[11:].all()
    ch = changed_by(layers, rot, DIALOGUE, x, 14)  # a frame of the later span
    assert not ch[:12].any() and ch[12:].all()


def test_frames_of_one_span_see_each_other():
    layers, rot = stack()
    ch = changed_by(layers, rot, DIALOGUE, torch.randn(1, 18, 32), 8)  # the last frame of span 0
    assert ch[4:9].all()  # ... changes every frame of its span, the first one included
    assert not ch[:4].any()  # ... but not the text before the span


def test_isolated_span_sees_only_itself():
    layout = Layout.from_segments([[("text", 4), ("audio", 5), ("text", 3), ("audio", 4, 0, True), ("text", 2)]])
    layers, rot = stack()
    x = torch.randn(1, 18, 32)
    for j in [0, 3, 6, 10]:  # context before the isolated span
        assert not changed_by(layers, rot, layout, x, j)[12:16].any()
    assert changed_by(layers, rot, layout, x, 15)[12:16].all()  # inside it: bidirectional
    assert changed_by(layers, rot, layout, x, 13)[16:].all()  # later text still reads the span


def test_documents_do_not_see_each_other_and_padding_is_invisible():
    layout = Layout.from_segments([[("text", 3), ("audio", 4), ("text", 2, 1), ("audio", 3, 1), ("pad", 3)]])
    layers, rot = stack()
    x = torch.randn(1, 15, 32)
    for j in [0, 4, 6]:
        assert not changed_by(layers, rot, layout, x, j)[7:12].any()
    for j in [12, 14]:
        assert not changed_by(layers, rot, layout, x, j)[:12].any()


segments = st.lists(
    st.tuples(st.sampled_from(["text", "audio"]), st.integers(1, 5), st.booleans()), min_size=1, max_size=5
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=segments, doc_split=st.integers(0, 4), j=st.integers(0, 40), seed=st.integers(0, 1000))
def test_influence_follows_the_mask_exactly(rows, doc_split, j, seed):
    "Output i of an L-layer stack depends on input j exactly when j reaches i in L steps of the mask graph."
    segs = [(kind, n, int(k >= doc_split), iso and kind == "audio") for k, (kind, n, iso) in enumerate(rows)]
    layout = Layout.from_segments([segs])
    T = layout.shape[1]
    j = j % T
    layers, rot = stack(seed=seed % 3)
    torch.manual_seed(seed)
    ch = changed_by(layers, rot, layout, torch.randn(1, T, 32), j)
    m = build_mask(layout)[0, 0].float()
    reach = (m @ m)[:, j] > 0  # two layers: paths of length <= 2 (the diagonal is always allowed)
    assert torch.equal(ch, reach)
    # the rule itself, written out
    q, k = 5 % T, j
    same_span = bool(layout.span[0, q] == layout.span[0, k] and layout.span[0, q] >= 0)
    rule = bool(layout.document[0, q] == layout.document[0, k]) and (k <= q or same_span)
    if layout.isolated[0, q]:
        rule = rule and same_span
    assert bool(m[q, k]) == (rule or q == k)


def test_flex_block_mask_matches_sdpa():
    layout = Layout.from_segments(
        [
            [("text", 4), ("audio", 5, 0, True), ("text", 3, 1), ("audio", 4, 1), ("pad", 4)],
            [("audio", 6), ("text", 7), ("audio", 7)],
        ]
    )
    layers, rot = stack()
    x = torch.randn(2, 20, 32)
    torch.testing.assert_close(
        outputs(layers, rot, layout, x, flex=True), outputs(layers, rot, layout, x), atol=1e-5, rtol=1e-5
    )


def test_positions_restart_per_document_and_skip_padding():
    layout = Layout.from_segments([[("text", 3), ("audio", 2), ("text", 2, 1), ("pad", 2)]])
    assert layout.positions()[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 0, 0]


def test_rope_frequencies_match_transformers_llama3():
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }
    cfg = LlamaConfig(hidden_size=256, num_attention_heads=2, rope_parameters={**scaling, "rope_theta": 500000.0})
    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    torch.testing.assert_close(rope_frequencies(128, 500000.0, scaling), ref.float())


# ---- bad input ----


def test_bad_layouts_and_configs_are_refused(tmp_path):
    z = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="Layout.span has shape"):
        Layout(z, torch.zeros(2, 4, dtype=torch.long), z, z.bool(), z.bool())
    with pytest.raises(ValueError, match="span id"):
        Layout(torch.ones_like(z), z - 1, z, z.bool(), z.bool())
    with pytest.raises(ValueError, match="only audio segments"):
        Layout.from_segments([[("text", 3, 0, True)]])
    with pytest.raises(ValueError, match="multiple of n_kv_heads"):
        TransformerConfig(n_heads=4, n_kv_heads=3)
    with pytest.raises(FileNotFoundError):
        config_from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma2"}))
    with pytest.raises(ValueError, match="gemma2"):
        config_from_hf(tmp_path)
    with pytest.raises(ValueError, match="rope_type"):
        rope_frequencies(16, 10000.0, {"rope_type": "yarn"})
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_generate(Transformer(TransformerConfig()), torch.zeros(1, 2, dtype=torch.long), -1, 2)
