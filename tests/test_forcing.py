"""Packing, noise policies and the Audio Transfusion Forcing loss."""
from types import SimpleNamespace

import pytest
import torch

from audiochat.model.forcing import (
    Batch,
    ForcingConfig,
    Turn,
    apply_noise,
    collate,
    diffusion_mse,
    forcing_loss,
    noise_levels,
    pack_dialogue,
    pack_rows,
    text_targets,
)
from audiochat.model.tokenizer import dialogue_corpus, special_token_ids, train_tokenizer
from audiochat.model.transformer import AUDIO, TEXT, build_mask

D = 4


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(dialogue_corpus(200), vocab_size=400)


def story(g=None):
    g = g or torch.Generator().manual_seed(0)
    return [Turn("user", "Tell a story about rain."), Turn("assistant", '{"duration":1,"sources":[]}', torch.randn(5, D, generator=g))]


def edit(g=None):
    g = g or torch.Generator().manual_seed(1)
    return story(g) + [Turn("user", "Make it louder."), Turn("assistant", '{"duration":1,"sources":[]}', torch.randn(4, D, generator=g))]


def understanding(g=None):
    g = g or torch.Generator().manual_seed(2)
    return [Turn("user", "Who says what here?", torch.randn(6, D, generator=g)), Turn("assistant", '{"duration":1,"sources":[]}')]


def allowed(seq):
    b = collate([seq], 0)
    return build_mask(b.layout)[0, 0]


@pytest.mark.parametrize("make, n_spans, targets", [(story, 1, [True]), (edit, 2, [True, True]), (understanding, 1, [False])])
def test_layout_and_mask(tok, make, n_spans, targets):
    ids = special_token_ids(tok)
    seq = pack_dialogue(make(), tok)
    audio = seq.modality == AUDIO
    assert seq.span[audio].unique().tolist() == list(range(n_spans))
    assert (seq.span[~audio] == -1).all()
    assert [bool(seq.target[seq.span == s].all()) for s in range(n_spans)] == targets
    # every span is bracketed by <|audio_start|> ... <|audio_end|>
    for s in range(n_spans):
        pos = (seq.span == s).nonzero()[:, 0]
        assert seq.tokens[pos[0] - 1] == ids["audio_start"] and seq.tokens[pos[-1] + 1] == ids["audio_end"]
    m = allowed(seq)
    T = len(seq)
    for q in range(T):
        for k in range(T):
            same_span = seq.span[q] >= 0 and seq.span[q] == seq.span[k]
            assert bool(m[q, k]) == (k <= q or bool(same_span)), (q, k)


def test_user_text_is_never_a_text_target(tok):
    ids = special_token_ids(tok)
    b = collate([pack_dialogue(edit(), tok)], ids["pad"])
    tt = text_targets(b, ids["audio_end"])
    nxt_turn, nxt_tok = b.turn[:, 1:], b.tokens[:, 1:]
    assert not tt[(nxt_turn % 2) == 0].any()  # turns 0 and 2 are the user's
    assert not tt[b.layout.modality[:, 1:] == AUDIO].any()
    assert not tt[nxt_tok == ids["audio_end"]].any()
    assert tt[(nxt_turn == 1) & (b.layout.modality[:, 1:] == TEXT) & (nxt_tok != ids["audio_end"])].all()


def test_forcing_levels_independent_shared_equal(tok):
    ids = special_token_ids(tok)
    b = collate([pack_dialogue(edit(), tok)] * 4000, ids["pad"])
    g = torch.Generator().manual_seed(0)
    t, _ = noise_levels(b, ForcingConfig(policy="forcing", clean_p=0, cfg_p=0), g)
    corr = torch.corrcoef(t.T)[0, 1].item()
    assert abs(corr) < 0.05 and not torch.equal(t[:, 0], t[:, 1])
    assert abs(t.mean().item() - 0.5) < 0.02  # uniform on [0, 1]
    t, _ = noise_levels(b, ForcingConfig(policy="shared", clean_p=0, cfg_p=0), g)
    assert torch.equal(t[:, 0], t[:, 1])
    t, _ = noise_levels(b, ForcingConfig(policy="clean_history"), g)
    assert (t[:, 0] == 0).all() and (t[:, 1] > 0).all()


def test_shared_is_per_dialogue_when_packed(tok):
    ids = special_token_ids(tok)
    seqs = [pack_dialogue(edit(torch.Generator().manual_seed(i)), tok) for i in range(2)]
    b = pack_rows(seqs, 2 * len(seqs[0]), ids["pad"])
    assert b.tokens.shape[0] == 1
    t, _ = noise_levels(b, ForcingConfig(policy="shared", clean_p=0, cfg_p=0), torch.Generator().manual_seed(0))
    assert t[0, 0] == t[0, 1] and t[0, 2] == t[0, 3] and t[0, 0] != t[0, 2]


def test_context_cap_and_cfg_isolation(tok):
    ids = special_token_ids(tok)
    b = collate([pack_dialogue(understanding(), tok)] * 500 + [pack_dialogue(story(), tok)] * 500, ids["pad"])
    t, iso = noise_levels(b, ForcingConfig(context_cap=0.3, clean_p=0, cfg_p=0.2), torch.Generator().manual_seed(0))
    assert t[:500, 0].max() <= 0.3 and t[500:, 0].max() > 0.9
    assert not iso[:500].any()  # user audio is never cut off
    assert 0.15 < iso[500:, 0].float().mean() < 0.25
    n = apply_noise(b, ForcingConfig(cfg_p=1.0), torch.Generator().manual_seed(0))
    m = build_mask(n.layout)[600, 0]
    span = n.layout.span[600]
    for q in (span == 0).nonzero()[:, 0]:
        assert m[q].nonzero()[:, 0].tolist() == (span == 0).nonzero()[:, 0].tolist()


class StandIn(torch.nn.Module):
    def __init__(self, V):
        super().__init__()
        self.emb = torch.nn.Embedding(V, V)
        self.lin = torch.nn.Linear(D + 1, D)

    def forward(self, tokens, latents, t, layout):
        return SimpleNamespace(text_logits=self.emb(tokens), audio_pred=self.lin(torch.cat([latents, t[..., None]], -1)))


@pytest.mark.parametrize("normalize", ["frame", "span"])
def test_loss_equals_hand_computation(tok, normalize):
    import math
    ids = special_token_ids(tok)
    torch.manual_seed(0)
    model = StandIn(len(tok))
    b = collate([pack_dialogue(edit(), tok), pack_dialogue(story(), tok)], ids["pad"])
    cfg = ForcingConfig(clean_p=0, cfg_p=0, normalize=normalize)
    got = forcing_loss(model, b, cfg, ids["audio_end"], torch.Generator().manual_seed(5))
    n = apply_noise(b, cfg, torch.Generator().manual_seed(5))
    # x_t and v by the textbook formulas
    a, s = torch.cos(math.pi / 2 * n.t)[..., None], torch.sin(math.pi / 2 * n.t)[..., None]
    eps = (n.latents - a * b.latents) / s.clamp_min(1e-12)
    v = a * eps - s * b.latents
    assert torch.allclose(v[n.loss_mask], n.v[n.loss_mask], atol=1e-4)
    logits, pred = model.emb(b.tokens), model.lin(torch.cat([n.latents, n.t[..., None]], -1))
    ce = []
    for r in range(b.tokens.shape[0]):
        for i in range(b.tokens.shape[1] - 1):
            nxt = int(b.tokens[r, i + 1])
            if b.target[r, i + 1] and b.layout.modality[r, i + 1] == TEXT and nxt != ids["audio_end"] and not b.layout.pad[r, i + 1]:
                ce.append(-torch.log_softmax(logits[r, i], -1)[nxt].item())
    errs = {}
    for r in range(b.tokens.shape[0]):
        for i in range(b.tokens.shape[1]):
            if n.loss_mask[r, i]:
                errs.setdefault((r, int(b.layout.span[r, i])), []).append(((pred[r, i] - n.v[r, i]) ** 2).mean().item())
    flat = [e for es in errs.values() for e in es]
    diff = sum(flat) / len(flat) if normalize == "frame" else sum(sum(es) / len(es) for es in errs.values()) / len(errs)
    lm = sum(ce) / len(ce)
    assert abs(got.lm.item() - lm) < 1e-4
    assert abs(got.diff.item() - diff) < 1e-5
    assert abs(got.loss.item() - (lm + 5 * diff)) < 1e-4


def test_diffusion_mse_span_weighting():
    pred, v = torch.zeros(1, 6, 1), torch.tensor([1.0, 1, 1, 1, 3, 0])[None, :, None]
    mask = torch.tensor([[True] * 5 + [False]])
    span = torch.tensor([[0, 0, 0, 0, 1, -1]])
    assert diffusion_mse(pred, v, mask, span, "frame").item() == pytest.approx((4 + 9) / 5)
    assert diffusion_mse(pred, v, mask, span, "span").item() == pytest.approx((1 + 9) / 2)
    assert diffusion_mse(pred, v, torch.zeros_like(mask), span).item() == 0


def test_bad_inputs(tok):
    with pytest.raises(ValueError, match="role must be"):
        Turn("robot", "hi")
    with pytest.raises(ValueError, match="NaN"):
        Turn("user", "hi", torch.full((3, D), float("nan")))
    with pytest.raises(ValueError, match="needs text or audio"):
        Turn("user", "")
    with pytest.raises(ValueError, match="policy must be one of"):
        ForcingConfig(policy="random")
    with pytest.raises(ValueError, match="at least one turn"):
        pack_dialogue([], tok)


def test_non_finite_loss_is_an_error(tok):
    ids = special_token_ids(tok)
    b = collate([pack_dialogue(story(), tok)], ids["pad"])
    model = StandIn(len(tok))
    with torch.no_grad():
        model.lin.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite loss"):
        forcing_loss(model, b, ForcingConfig(clean_p=0, cfg_p=0), ids["audio_end"])
    assert isinstance(b, Batch)


def test_span_denoiser_with_an_exact_model_samples_the_target(tok):
    """A stand-in that knows the clean latents returns the exact v at every step, so sampling must land on them."""
    import math

    from audiochat.model.diffusion import sample
    from audiochat.model.forcing import span_denoiser
    ids = special_token_ids(tok)
    b = collate([pack_dialogue(edit(torch.Generator().manual_seed(i)), tok) for i in range(3)], ids["pad"])
    seen = []

    class Exact(torch.nn.Module):
        def forward(self, tokens, latents, t, layout):
            seen.append((latents.clone(), t.clone()))
            a, s = torch.cos(math.pi / 2 * t)[..., None], torch.sin(math.pi / 2 * t)[..., None]
            v = (a * latents - b.latents) / s.clamp_min(1e-8)  # x0 = a x_t - s v
            return SimpleNamespace(text_logits=None, audio_pred=v)

    fn, shape = span_denoiser(Exact(), b, span_id=1)
    assert shape == (3, 4, D)
    x = sample(fn, shape, steps=8, generator=torch.Generator().manual_seed(0))
    target = b.latents[b.layout.audio & (b.layout.span == 1)].reshape(shape)
    assert torch.allclose(x, target, atol=1e-4)
    lat, t = seen[0]
    other = b.layout.audio & (b.layout.span == 0)
    assert torch.equal(lat[other], b.latents[other]) and (t[other] == 0).all()  # the history stays clean
    bad = collate([pack_dialogue(story(), tok), pack_dialogue(understanding(), tok)], ids["pad"])
    with pytest.raises(ValueError, match="same number of frames"):
        span_denoiser(Exact(), bad, span_id=0)


def test_plan_frames_follow_the_scene():
    "Each frame carries the sources sounding at its centre: kind, speaker, caption words, loudness, pan, position."
    from audiochat.core.scene import Scene
    from audiochat.model.forcing import PLAN_FEATURES, plan_frames, source_features
    s = Scene.from_json('{"duration":2,"sources":[{"id":"s1","kind":"speech","speaker":"girl","text":"Hi.","start":0.5,'
                        '"end":1,"loudness_db":-20,"pan":-0.5},{"id":"fx1","kind":"sfx","caption":"rain","start":0,"end":2}]}')
    p = plan_frames(s, 80)
    assert p.shape == (80, PLAN_FEATURES)
    speech, sfx = p[:, 0], p[:, 1]
    assert speech[20:40].eq(1).all() and speech[:20].eq(0).all() and speech[40:].eq(0).all()  # 0.5-1 s at 40 frames/s
    assert sfx.eq(1).all()
    rain = next(x for x in s.sources if x.id == "fx1")
    only_rain = p[0] - source_features(rain)  # before the speech starts: rain alone, at its first frame
    assert only_rain[:-3].abs().max() == 0 and p[0, -2] == 1 and p[-1, -1] == 1  # onset at the start, offset at the end
    assert torch.allclose(p[:20, -3], (torch.arange(20) + 0.5) / 80)  # progress through the rain, alone before 0.5 s
    assert plan_frames(s, 10).shape == (10, PLAN_FEATURES)  # frames past the audio are not planned
    assert plan_frames(Scene(duration=1.0, sources=[]), 40).eq(0).all()


def test_plan_is_packed_at_audio_frames_only(tok):
    from audiochat.model.forcing import PLAN_FEATURES
    turns = story()
    plan = torch.rand(5, PLAN_FEATURES)
    turns[1] = Turn("assistant", turns[1].text, turns[1].audio, plan=plan)
    seq = pack_dialogue(turns, tok)
    assert seq.plan.shape == (len(seq), PLAN_FEATURES)
    assert torch.equal(seq.plan[seq.modality == AUDIO], plan) and seq.plan[seq.modality == TEXT].eq(0).all()
    b = collate([seq, pack_dialogue(edit(), tok)], 0)
    assert b.plan.shape == (2, b.tokens.shape[1], PLAN_FEATURES) and b.plan[1].eq(0).all()
    assert collate([pack_dialogue(edit(), tok)], 0).plan is None  # no dialogue planned: no tensor at all
    with pytest.raises(ValueError, match="Turn.plan"): Turn("assistant", "x", torch.zeros(5, D), plan=torch.zeros(4, PLAN_FEATURES))
    with pytest.raises(ValueError, match="without audio"): Turn("assistant", "x", plan=torch.zeros(4, PLAN_FEATURES))
