"""Smoke and behaviour tests for every AudioChat architecture (sct, dense, mot, dit)."""

import json
import logging

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from audiochat.model.sct import (
    ARCHS,
    AudioChatModel,
    ModelConfig,
    count_parameters,
    flops_per_token,
    preset,
)
from audiochat.model.transformer import Layout

logging.getLogger("transformers").setLevel(logging.ERROR)


def config(arch, **kw):
    return preset(
        "tiny", arch=arch, vocab_size=64, d_model=32, n_layers=2, n_gen_layers=1, latent_dim=8, time_freqs=32, **kw
    )


LAYOUT = Layout.from_segments(
    [
        [("text", 5), ("audio", 6), ("text", 3), ("audio", 5), ("text", 2)],
        [("text", 4), ("audio", 5, 0, True), ("text", 3, 1), ("audio", 4, 1), ("pad", 5)],
    ]
)


def batch(c, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, T = LAYOUT.shape
    tokens = torch.randint(0, c.vocab_size, (B, T), generator=g)
    latents = torch.randn(B, T, c.latent_dim, generator=g)
    t = torch.where(LAYOUT.audio, torch.rand(B, T, generator=g), torch.zeros(()))
    return tokens, latents, t, LAYOUT


def live(model):
    "Give the DiT's zero-initialised (adaLN-Zero) weights random values, so its outputs depend on its inputs."
    if model.config.arch == "dit":
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            for p in model.parameters():
                if p.abs().sum() == 0:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def losses(model, tokens, latents, t, layout):
    out = model(tokens, latents, t, layout)
    diff = F.mse_loss(out.audio_pred[layout.audio], latents[layout.audio])
    if out.text_logits is None:
        return None, diff
    nxt = layout.text[:, 1:] & layout.text[:, :-1]
    return F.cross_entropy(out.text_logits[:, :-1][nxt], tokens[:, 1:][nxt]), diff


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_finite_loss(arch):
    c = config(arch)
    model = AudioChatModel(c)
    tokens, latents, t, layout = batch(c)
    out = model(tokens, latents, t, layout)
    assert out.audio_pred.shape == (2, 21, c.latent_dim)
    if arch == "dit":
        assert out.text_logits is None
    else:
        assert out.text_logits.shape == (2, 21, c.vocab_size)
    lm, diff = losses(model, tokens, latents, t, layout)
    assert torch.isfinite(diff) and (lm is None or torch.isfinite(lm))


@pytest.mark.parametrize("arch", ARCHS)
def test_backward_reaches_every_parameter(arch):
    model = AudioChatModel(config(arch))
    lm, diff = losses(model, *batch(model.config))
    (diff if lm is None else lm + 5 * diff).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []
    if arch != "dit":  # (the DiT's adaLN-Zero init makes most gradients exactly zero at step 0, by design)
        zero = [n for n, p in model.named_parameters() if p.grad.abs().sum() == 0]
        assert zero == []


def test_sct_text_loss_never_reaches_the_generation_side():
    model = AudioChatModel(config("sct"))
    lm, _ = losses(model, *batch(model.config))
    lm.backward()
    generation = ("gen_layers.", "gen_in.", "audio_norm.", "diffusion_head.")
    for n, p in model.named_parameters():
        if n.startswith(generation):
            assert p.grad is None, n
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.layers.parameters())


def test_sct_diffusion_loss_does_not_reach_the_text_head():
    model = AudioChatModel(config("sct"))
    _, diff = losses(model, *batch(model.config))
    diff.backward()
    assert model.lm_head.weight.grad is None and model.norm.weight.grad is None
    assert all(p.grad is not None for p in model.gen_layers.parameters())


@pytest.mark.parametrize("arch", ["sct", "dense", "mot"])
def test_text_path_and_cached_generation(arch):
    model = AudioChatModel(config(arch)).eval()
    calls = []
    if arch == "sct":
        for layer in model.gen_layers:
            layer.register_forward_hook(lambda *a: calls.append(1))
    prompt = torch.randint(0, 64, (2, 6))
    got = model.generate_text(prompt, 5)
    seq = prompt
    for _ in range(5):
        seq = torch.cat([seq, model.forward_text(seq)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(got, seq)
    assert calls == []  # SCT: text never runs the generation layers
    # the text path equals the full forward's text logits on a text-only sequence
    layout = Layout.text_only(prompt)
    full = model(prompt, torch.zeros(2, 6, model.config.latent_dim), torch.zeros(2, 6), layout).text_logits
    torch.testing.assert_close(model.forward_text(prompt), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_causality_and_cfg_isolation(arch):
    model = live(AudioChatModel(config(arch))).eval()
    tokens, latents, t, layout = batch(model.config)
    base = model(tokens, latents, t, layout)
    later = latents.clone()
    later[0, 14:19] += 3  # the second span of row 0
    out = model(tokens, later, t, layout)
    if arch == "dit":  # bidirectional: earlier positions do see it
        assert not torch.allclose(out.audio_pred[0, 5:11], base.audio_pred[0, 5:11])
    else:
        torch.testing.assert_close(out.audio_pred[0, :14], base.audio_pred[0, :14])
        torch.testing.assert_close(out.text_logits[0, :14], base.text_logits[0, :14])
    context = tokens.clone()
    context[1, :4] = (context[1, :4] + 1) % 64  # the text before row 1's isolated span
    out = model(context, latents, t, layout)
    torch.testing.assert_close(out.audio_pred[1, 4:9], base.audio_pred[1, 4:9])


@pytest.mark.parametrize("arch", ARCHS)
def test_flex_path_matches_sdpa(arch):
    model = live(AudioChatModel(config(arch))).eval()
    args = batch(model.config)
    with torch.no_grad():
        a, b = model(*args), model(*args, flex=True)
    torch.testing.assert_close(b.audio_pred, a.audio_pred, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip(arch, tmp_path):
    model = live(AudioChatModel(config(arch, tie_embeddings=arch == "mot"))).eval()
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "config.json").read_text())["arch"] == arch
    loaded = AudioChatModel.load(tmp_path).eval()
    assert loaded.config == model.config
    args = batch(model.config)
    torch.testing.assert_close(loaded(*args).audio_pred, model(*args).audio_pred, atol=0, rtol=0)


def test_audio_embeddings_are_norm_matched():
    model = AudioChatModel(config("sct"))
    tokens, latents, t, layout = batch(model.config)
    x, _ = model.embed(tokens, latents * 100, t, layout)
    target = model.embed_tokens.weight.norm(dim=-1).mean()
    torch.testing.assert_close(
        x[layout.audio].norm(dim=-1), target.expand(int(layout.audio.sum())), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_flops_per_token_matches_the_flop_counter(arch):
    c = config(arch)
    model = AudioChatModel(c)
    args = batch(c)
    T = LAYOUT.shape[1]
    with FlopCounterMode(display=False) as counter:
        model(*args)
    measured = counter.get_total_flops() / (2 * T)
    # FlopCounterMode sees every matmul; whether it sees the CPU attention kernel depends on the torch version
    assert measured in (flops_per_token(c, 0), flops_per_token(c, T))
    if arch != "dit":
        with FlopCounterMode(display=False) as counter:
            model.forward_text(args[0])
        assert counter.get_total_flops() / (2 * T) in (
            flops_per_token(c, 0, text_only=True),
            flops_per_token(c, T, text_only=True),
        )


def test_parameter_counts_tell_the_archs_apart():
    n = {a: count_parameters(AudioChatModel(config(a))) for a in ARCHS}
    assert n["mot"] > 1.5 * n["dense"]
    assert n["sct"] > n["dense"]  # one extra input projection, same depth
    assert flops_per_token(config("sct"), 64, text_only=True) < flops_per_token(config("dense"), 64, text_only=True)


# ---- starting from a pretrained LLM ----


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("llama")
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(
            vocab_size=60,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    )
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.eval().save_pretrained(path)
    return path, hf


def test_sct_from_hf_keeps_the_llm_on_the_text_path(llama_dir):
    path, hf = llama_dir
    model = AudioChatModel.from_hf(path, vocab_size=64, latent_dim=8).eval()  # 4 new special tokens
    assert (model.config.arch, model.config.n_layers, model.config.n_gen_layers) == ("sct", 2, 1)
    tokens = torch.randint(0, 60, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_text(tokens)[..., :60], hf(tokens).logits, atol=2e-5, rtol=1e-5)
    assert model.embed_tokens.weight.shape == (64, 32)


@pytest.mark.parametrize("arch", ["dense", "mot"])
def test_from_hf_fills_the_first_layers(arch, llama_dir):
    path, hf = llama_dir
    model = AudioChatModel.from_hf(path, arch=arch, latent_dim=8)
    ref = hf.model.layers[1].state_dict()
    branches = [model.layers[1]] if arch == "dense" else [model.layers[1].text, model.layers[1].audio]
    for branch in branches:
        for name, tensor in branch.state_dict().items():
            assert torch.equal(tensor, ref[name]), name
    assert len(model.layers) == 3  # U + G: the last layer is new


def test_from_hf_refuses_mismatches(llama_dir):
    path, _ = llama_dir
    with pytest.raises(ValueError, match="d_ff: config 96 vs checkpoint 64"):
        AudioChatModel.from_hf(path, config("sct"))
    with pytest.raises(ValueError, match="d_model: config 64 vs checkpoint 32"):
        AudioChatModel.from_hf(path, preset("tiny"))
    with pytest.raises(ValueError, match="dit"):
        AudioChatModel.from_hf(path, arch="dit")
    with pytest.raises(ValueError, match="vocab_size"):
        AudioChatModel.from_hf(path, vocab_size=10)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="arch must be one of"):
        ModelConfig(arch="moe")
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("huge")
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"colour": 1})
    model = AudioChatModel(config("sct"))
    tokens, latents, t, layout = batch(model.config)
    with pytest.raises(ValueError, match="latents must be"):
        model(tokens, latents[..., :3], t, layout)
    with pytest.raises(ValueError, match="t must be"):
        model(tokens, latents, t[:, :4], layout)
    with pytest.raises(ValueError, match="text positions only"):
        model.forward_text(tokens, layout)
    with pytest.raises(ValueError, match="no text head"):
        AudioChatModel(config("dit")).forward_text(tokens)
    with pytest.raises(FileNotFoundError):
        AudioChatModel.load("/nonexistent/checkpoint")


@pytest.mark.parametrize("arch", ARCHS)
def test_bfloat16_forward_is_finite(arch):
    model = live(AudioChatModel(config(arch))).to(torch.bfloat16)
    tokens, latents, t, layout = batch(model.config)
    out = model(tokens, latents, t, layout)  # float32 latents and t are accepted by a bf16 model
    assert out.audio_pred.dtype == torch.bfloat16 and torch.isfinite(out.audio_pred).all()
    if out.text_logits is not None:
        assert torch.isfinite(out.text_logits).all()


@pytest.mark.parametrize("arch", ["sct", "dense", "mot"])
def test_cached_context_gives_the_same_span_predictions(arch):
    model = AudioChatModel(config(arch)).eval()
    tokens, latents, t, layout = batch(model.config)
    tokens, latents, t, layout = (
        tokens[:1],
        latents[:1],
        t[:1],
        Layout.from_segments([[("text", 5), ("audio", 6), ("text", 3), ("audio", 5), ("text", 2)]]),
    )
    with torch.no_grad():
        full = model(tokens, latents, t, layout)
        cache = model.new_cache()
        model(tokens[:, :14], latents[:, :14], t[:, :14], layout.slice(0, 14), cache=cache)
        for scale in (1.0, 0.5):  # two "denoising steps" against the same context
            span = model(
                tokens[:, 14:19],
                latents[:, 14:19] * scale,
                t[:, 14:19],
                layout.slice(14, 19),
                cache=cache,
                commit=False,
            )
            if scale == 1.0:
                torch.testing.assert_close(span.audio_pred, full.audio_pred[:, 14:19], atol=1e-5, rtol=1e-5)
        assert cache.length == 14 and all(k.shape[2] == 14 for k in cache.keys)
        model(tokens[:, 14:], latents[:, 14:], t[:, 14:], layout.slice(14), cache=cache)
    torch.testing.assert_close(model.forward_text(tokens[:, :5]), full.text_logits[:, :5], atol=1e-5, rtol=1e-5)
    if arch == "sct":  # the text path has fewer layers than the full forward: one cache cannot serve both
        with pytest.raises(ValueError, match="either forward or forward_text"):
            model.forward_text(tokens[:, :3], cache=cache)
    with pytest.raises(ValueError, match="cannot be cached"):
        AudioChatModel(config("dit")).new_cache()


def test_plan_features_reach_the_audio_predictions():
    "A model built with plan_features reads the plan; one built without it ignores any plan it is given."
    tokens, latents, t, layout = batch(config("sct"))
    plan = torch.randn(*tokens.shape, 6)
    torch.manual_seed(0); planned = AudioChatModel(config("sct", plan_features=6)).eval()
    a = planned(tokens, latents, t, layout, plan=plan).audio_pred
    b = planned(tokens, latents, t, layout, plan=plan * 2).audio_pred
    assert not torch.allclose(a[layout.audio], b[layout.audio])
    with pytest.raises(ValueError, match="plan must be"): planned(tokens, latents, t, layout, plan=plan[..., :5])
    torch.manual_seed(0); plain = AudioChatModel(config("sct")).eval()
    assert torch.equal(plain(tokens, latents, t, layout, plan=plan).audio_pred, plain(tokens, latents, t, layout).audio_pred)
    with pytest.raises(ValueError, match="plan_features"): ModelConfig(plan_features=-1)


def test_decoding_builds_no_autograd_graph():
    "Text decoding runs without autograd: a graph over thousands of cached steps made it twice as slow."
    from audiochat.model.grammar import decode_text
    model = AudioChatModel(preset("tiny")).eval()
    seen, forward = [], model.forward_text
    model.forward_text = lambda *a, **k: seen.append(torch.is_grad_enabled()) or forward(*a, **k)
    d = decode_text(model, torch.tensor([[1, 2, 3]]), max_new_tokens=3)
    assert len(d.ids) == 3 and seen and not any(seen)
