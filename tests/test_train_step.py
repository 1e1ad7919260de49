"""The training step's fast paths give the losses of the plain one: fused q/k/v and gate/up matmuls, fused RMSNorm, the
additive mask, the causal kernel for text-only batches, LM logits only at the targets and fused AdamW, against the
textbook forms; and the attention backend training asks for (FlexAttention on CUDA, SDPA elsewhere)."""
import importlib.util

import pytest
import torch
import torch.nn.functional as F

import audiochat.model.forcing as forcing
import audiochat.model.transformer as tr
import audiochat.training.streams as ST
import audiochat.training.train as T
from audiochat.model.forcing import (
    ForcingConfig,
    Turn,
    collate,
    forcing_loss,
    pack_dialogue,
    pack_rows,
)
from audiochat.model.sct import AudioChatModel
from audiochat.model.tokenizer import special_token_ids, train_tokenizer
from audiochat.runs.config import resolve

torch.set_num_threads(1)
SMALL = ["--model.d_model=32", "--model.n_layers=2", "--model.n_gen_layers=1", "--model.n_heads=2", "--model.n_kv_heads=1",
         "--data.synthetic_dialogues=24", "--data.eval_dialogues=2", "--data.batch_size=2", "--data.max_frames=12",
         "--data.max_turns=2", "--data.window=8", "--run.progress=false", "--run.eval_every=0", "--run.log_every=1",
         "--run.save_every=0", "--optim.steps=6", "--optim.warmup=2"]


# ---- the textbook forms, as the step was written before it was made fast ----
def plain_rms_norm(self, x):
    y = x.float()
    return self.weight * (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

def plain_attention(self, x, rope, mask, cache=None, layer=0):
    q = tr.apply_rotary(self.split(self.q_proj(x), self.n_heads), *rope)
    k = tr.apply_rotary(self.split(self.k_proj(x), self.n_kv_heads), *rope)
    v = self.split(self.v_proj(x), self.n_kv_heads)
    if cache is not None: k, v = cache.update(layer, k, v)
    return self.o_proj(tr.merge_heads(tr.attention(q, k, v, mask)))

def plain_mlp(self, x): return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))

class LoopAdamW(torch.optim.AdamW):
    "AdamW's per-tensor loop (no fused kernel, no foreach)."
    def __init__(self, params, **kw): super().__init__(params, **{**kw, "fused": None, "foreach": False})


def plain_step(monkeypatch):
    "Swap every fast path of the step for its plain form."
    monkeypatch.setattr(tr.RMSNorm, "forward", plain_rms_norm)
    monkeypatch.setattr(tr.Attention, "forward", plain_attention)
    monkeypatch.setattr(tr.MLP, "forward", plain_mlp)
    monkeypatch.setattr(tr, "additive_mask", lambda mask: mask)  # the boolean mask, converted by SDPA in every layer
    monkeypatch.setattr(tr, "plain_causal", lambda layout: False)  # text-only batches through the full mask too
    monkeypatch.setattr(forcing, "_model_options", lambda model, at, device: {})  # logits at every position
    monkeypatch.setattr(torch.optim, "AdamW", LoopAdamW)


def step_losses(tmp_path, name, *extra):
    state = T.train(resolve("tiny", overrides=SMALL + [f"--run.out={tmp_path / name}", *extra]))
    return torch.tensor([[h["loss"], h["lm"], h["diff"], h["grad_norm"]] for h in state["history"]], dtype=torch.float64)


@pytest.mark.parametrize("arch", ["sct", "mot"])
def test_fast_step_has_the_plain_step_losses(tmp_path, monkeypatch, arch):
    fast = step_losses(tmp_path, "fast", f"--model.arch={arch}")
    with monkeypatch.context() as m:
        plain_step(m)
        plain = step_losses(tmp_path, "plain", f"--model.arch={arch}")
    assert fast.shape == plain.shape == (6, 4)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)  # float rounding only (fused AdamW: about 1e-7)
    assert (fast[1:, 0] != fast[:-1, 0]).all()  # the losses move: the comparison is not of constants


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(ST.synthetic_texts(60) + ['{"sources": [{"id": "fx1", "class": "rain"}]}'] * 20, vocab_size=300)


def text_dialogues(n):
    return [[Turn("user", f"Make {i} seconds of rain" + " and wind" * (i % 4)), Turn("assistant", '{"sources": []}' + " ok" * (4 * i * i))]
            for i in range(n)]


def test_plain_causal_layouts():
    rows = lambda *segs: tr.Layout.from_segments(list(segs))
    assert tr.plain_causal(rows([("text", 5)], [("text", 3), ("pad", 2)]))  # padding at the end of a row
    assert not tr.plain_causal(rows([("text", 2), ("audio", 3)]))  # audio spans see each other both ways
    assert not tr.plain_causal(rows([("text", 3, 0), ("text", 2, 1)]))  # packed documents never see each other
    assert not tr.plain_causal(rows([("pad", 2), ("text", 3)]))  # left padding would be seen


def test_text_only_batches_take_the_causal_kernel_with_the_same_loss_and_gradients(tok, monkeypatch):
    ids = special_token_ids(tok)
    seqs = [pack_dialogue(d, tok, latent_dim=8) for d in text_dialogues(6)]
    torch.manual_seed(0)
    model = AudioChatModel(dict(vocab_size=len(tok), d_model=32, n_heads=2, n_kv_heads=1, n_layers=2, n_gen_layers=1, latent_dim=8))
    batch = collate(seqs, ids["pad"])
    assert batch.layout.pad.any() and tr.prepare(batch.layout, model.rotary)[0] == tr.CAUSAL
    def loss_and_grads():
        model.zero_grad()
        out = forcing_loss(model, batch, ForcingConfig(), ids["audio_end"], torch.Generator().manual_seed(0))
        out.loss.backward()
        return out, torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    fast, fast_grads = loss_and_grads()
    monkeypatch.setattr(tr, "plain_causal", lambda layout: False)  # the full mask: padding and the causal rule written out
    masked, masked_grads = loss_and_grads()
    assert fast.n_text == masked.n_text > 0
    torch.testing.assert_close(fast.loss, masked.loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fast_grads, masked_grads, rtol=1e-5, atol=1e-7)
    # packed rows (several dialogues in a row) keep the full mask, and the same loss
    packed = pack_rows(seqs, max(map(len, seqs)), ids["pad"])
    assert packed.tokens.shape[0] < batch.tokens.shape[0] and not tr.plain_causal(packed.layout)
    with torch.no_grad():
        torch.testing.assert_close(forcing_loss(model, packed, ForcingConfig(), ids["audio_end"]).loss, fast.loss, rtol=1e-6, atol=1e-6)


def test_lm_logits_at_targets_are_the_full_logits_there():
    torch.manual_seed(0)
    model = AudioChatModel(dict(vocab_size=50, d_model=32, n_heads=2, n_kv_heads=1, n_layers=2, n_gen_layers=1, latent_dim=8))
    layout = tr.Layout.from_segments([[("text", 5), ("audio", 4), ("text", 3)], [("text", 6), ("pad", 6)]])
    tokens, latents, t = torch.randint(0, 50, (2, 12)), torch.randn(2, 12, 8), torch.rand(2, 12) * layout.audio
    at = torch.rand(2, 12) < 0.5
    with torch.no_grad():
        full, some = model(tokens, latents, t, layout), model(tokens, latents, t, layout, logits_at=at)
        torch.testing.assert_close(some.text_logits, full.text_logits[at], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(some.audio_pred, full.audio_pred)
        text = tr.Layout.text_only(tokens)
        torch.testing.assert_close(model.forward_text(tokens, text, logits_at=at), model.forward_text(tokens, text)[at], rtol=1e-6, atol=1e-6)


# ---- which attention training takes ----
def test_attention_backend_by_device(monkeypatch):
    assert tr.attention_backend("cpu") == tr.attention_backend(torch.device("cpu")) == "sdpa"
    has_triton = importlib.util.find_spec("triton") is not None
    assert tr.attention_backend("cuda") == ("flex" if has_triton else "sdpa")  # the choice needs no GPU to be made
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "triton" else real(name, *a))
    assert tr.attention_backend("cuda") == "sdpa"  # no Triton, no compiled FlexAttention: the SDPA fallback


class Spy(torch.nn.Module):
    "A stand-in model that records the options forcing_loss gives it."
    def __init__(self, model):
        super().__init__(); self.model, self.config, self.calls = model, model.config, []
    def forward(self, tokens, latents, t, layout, flex: bool = False, logits_at=None):
        self.calls.append(("forward", flex)); return self.model(tokens, latents, t, layout, flex=flex, logits_at=logits_at)
    def forward_text(self, tokens, layout=None, flex: bool = False, logits_at=None):
        self.calls.append(("forward_text", flex)); return self.model.forward_text(tokens, layout, flex=flex, logits_at=logits_at)


@pytest.mark.parametrize("backend", ["flex", "sdpa"])
def test_forcing_loss_asks_for_the_backends_attention(tok, monkeypatch, backend):
    ids = special_token_ids(tok)
    monkeypatch.setattr(forcing, "attention_backend", lambda device: backend)  # what CUDA would choose, on this CPU
    torch.manual_seed(0)
    model = Spy(AudioChatModel(dict(vocab_size=len(tok), d_model=32, n_heads=2, n_kv_heads=1, n_layers=2, n_gen_layers=1, latent_dim=8)))
    audio = collate([pack_dialogue([Turn("user", "rain"), Turn("assistant", "here", audio=torch.randn(5, 8))], tok)], ids["pad"])
    text = collate([pack_dialogue(text_dialogues(2)[1], tok, latent_dim=8)], ids["pad"])
    with torch.no_grad():  # FlexAttention on the CPU: forward only (its unfused reference path)
        got = [forcing_loss(model, b, ForcingConfig(), ids["audio_end"], torch.Generator().manual_seed(1)).loss for b in (audio, text)]
    assert model.calls == [("forward", backend == "flex"), ("forward_text", backend == "flex")]
    with torch.no_grad():
        monkeypatch.setattr(forcing, "attention_backend", lambda device: "sdpa")
        ref = [forcing_loss(model.model, b, ForcingConfig(), ids["audio_end"], torch.Generator().manual_seed(1)).loss for b in (audio, text)]
    torch.testing.assert_close(torch.stack(got), torch.stack(ref), rtol=1e-5, atol=1e-5)  # both attentions: the same losses
