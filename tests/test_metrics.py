"""cpWER and tcpWER: the hand-written scorers against MeetEval, edge cases, bad input and properties."""
import math
import random

import meeteval
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meeteval.io import SegLST

from audiochat.core.scene import Scene, Source
from audiochat.eval.wer import (
    WordErrorRate,
    align_words,
    check_segments,
    cpwer,
    cpwer_from_scratch,
    tcpwer,
    tcpwer_from_scratch,
    word_intervals,
    word_points,
)

VOCAB = "a an the door creaked open who is there nobody answered rain thunderstorm whispered quietly".split()
COLLARS = [0, 0, 0.1, 0.5, 1, 2, 5]
N_RANDOM = 300


def random_case(rng: random.Random):
    "A random reference (1-4 speakers, overlapping segments, some self-overlap) and a corrupted hypothesis."
    speakers = [f"r{i}" for i in range(rng.randint(1, 4))]
    integer = rng.random() < 0.1  # MeetEval has an integer-time code path
    ref = []
    for spk in speakers:
        t = rng.uniform(0, 3)
        for _ in range(rng.randint(1, 4)):
            start = t if rng.random() < 0.8 else max(0.0, t - rng.uniform(0, 2))
            dur = rng.uniform(0.3, 4)
            a, b = round(start, 2), round(start + dur, 2)
            if integer:
                a, b = int(a), int(b) + 1
            n = rng.randint(0 if rng.random() < 0.05 else 1, 6)
            ref.append(dict(session_id="s", speaker=spk, start_time=a, end_time=b,
                            words=" ".join(rng.choice(VOCAB) for _ in range(n))))
            t = start + dur + rng.uniform(-0.5, 3)
    rng.shuffle(ref)
    names = [f"h{i}" for i in range(len(speakers) + 2)]
    rng.shuffle(names)  # hypothesis speakers have other names, in another order
    label = dict(zip(speakers, names))
    jitter = rng.choice([0.0, 0.1, 0.5, 1.5])
    hyp = []
    for s in ref:
        if rng.random() < 0.1:
            continue  # a missed segment
        out = []
        for w in s["words"].split():
            u = rng.random()
            if u < 0.1:
                continue  # deleted word
            out.append(rng.choice(VOCAB) if u < 0.2 else w)  # substituted word
            if rng.random() < 0.08:
                out.append(rng.choice(VOCAB))  # inserted word
        spk = label[s["speaker"]] if rng.random() > 0.1 else rng.choice(names)  # speaker confusion / extra speaker
        a = max(0.0, s["start_time"] + rng.gauss(0, jitter))
        b = max(a, s["end_time"] + rng.gauss(0, jitter))
        if integer:
            a, b = int(a), int(b) + 1
        else:
            a, b = round(a, rng.choice([2, 3, 6])), round(b, rng.choice([2, 3, 6]))
        hyp.append(dict(session_id="s", speaker=spk, start_time=a, end_time=max(a, b), words=" ".join(out)))
    if rng.random() < 0.2:
        a = rng.uniform(0, 15)
        hyp.append(dict(session_id="s", speaker=rng.choice(names), start_time=a, end_time=a + 1, words="rain rain"))
    if rng.random() < 0.05:
        hyp = []
    return ref, hyp, rng.choice(COLLARS)


def meeteval_tcp(ref, hyp, collar):
    return meeteval.wer.time_constrained_minimum_permutation_word_error_rate(SegLST(ref), SegLST(hyp), collar=collar)


def meeteval_cp(ref, hyp):
    return meeteval.wer.cp_word_error_rate(SegLST(ref), SegLST(hyp))


def same(ours: WordErrorRate, theirs):
    "Equal on every count, the rate (MeetEval: None for an empty reference) and the speaker assignment."
    assert (ours.errors, ours.length) == (theirs.errors, theirs.length)
    assert (ours.substitutions, ours.insertions, ours.deletions) == (theirs.substitutions, theirs.insertions, theirs.deletions)
    if theirs.length:
        assert ours.error_rate == pytest.approx(theirs.error_rate)
    else:
        assert theirs.error_rate is None and ours.error_rate == (0.0 if ours.errors == 0 else math.inf)
    assert ours.assignment == tuple(tuple(p) for p in theirs.assignment)


def test_random_cases_match_meeteval():
    rng = random.Random(2026)
    collars = set()
    for _ in range(N_RANDOM):
        ref, hyp, collar = random_case(rng)
        collars.add(collar)
        same(tcpwer_from_scratch(ref, hyp, collar), meeteval_tcp(ref, hyp, collar))
        same(cpwer_from_scratch(ref, hyp), meeteval_cp(ref, hyp))
        assert tcpwer(ref, hyp, collar) == tcpwer_from_scratch(ref, hyp, collar)
        assert cpwer(ref, hyp) == cpwer_from_scratch(ref, hyp)
    assert collars == set(COLLARS)


def seg(speaker, start, end, words, session="s"):
    return dict(session_id=session, speaker=speaker, start_time=start, end_time=end, words=words)


REF = [seg("A", 0.0, 2.0, "the old door creaked open"), seg("B", 1.5, 3.0, "who is there"),
       seg("A", 3.5, 5.0, "nobody answered")]


@pytest.mark.parametrize("hyp,collar", [
    ([], 1.0),  # empty hypothesis
    ([seg("x", 0.0, 2.0, "the old door creaked open")], 0.5),  # a missing speaker
    ([seg("x", 0.0, 2.0, "the old door")] * 1 + [seg("y", 1.5, 3.0, "who is there"), seg("z", 6.0, 7.0, "hush now")], 0.5),
    ([seg("x", 10.0, 12.0, "the old door creaked open"), seg("y", 11.5, 13.0, "who is there")], 0.5),  # wrong times
    ([seg("x", 0.0, 5.0, "the old door creaked open who is there nobody answered")], 5.0),  # speakers merged
    ([seg("y", 0.0, 2.0, "the old door creaked open"), seg("x", 1.5, 3.0, "who is there")], 0),  # swapped labels
    ([seg("x", 0.0, 2.0, ""), seg("y", 1.0, 1.0, "who")], 0.0),  # an empty segment, a zero-length segment
])
def test_edge_cases_match_meeteval(hyp, collar):
    same(tcpwer_from_scratch(REF, hyp, collar), meeteval_tcp(REF, hyp, collar))
    same(cpwer_from_scratch(REF, hyp), meeteval_cp(REF, hyp))


def test_empty_hypothesis_deletes_everything():
    r = tcpwer(REF, [], collar=1.0)
    assert (r.errors, r.deletions, r.length, r.error_rate) == (10, 10, 10, 1.0)
    assert r.missed_speakers == 2


def test_empty_reference_rate_is_defined():
    hyp = [seg("x", 0.0, 1.0, "hello there")]
    for r in (tcpwer([], hyp), tcpwer_from_scratch([], hyp), cpwer([], hyp), cpwer_from_scratch([], hyp)):
        assert (r.errors, r.insertions, r.length, r.error_rate) == (2, 2, 0, math.inf)
        assert r.false_alarm_speakers == 1
    for r in (tcpwer([], []), cpwer_from_scratch([], [])):
        assert (r.errors, r.length, r.error_rate, r.assignment) == (0, 0, 0.0, ())


def test_extra_and_missing_speakers():
    extra = REF + [seg("C", 6.0, 7.0, "hush now")]
    r = tcpwer_from_scratch(REF, [dict(s, speaker=s["speaker"].lower()) for s in extra], collar=0.5)
    assert (r.errors, r.insertions, r.false_alarm_speakers) == (2, 2, 1)
    r = tcpwer_from_scratch(extra, REF, collar=0.5)
    assert (r.errors, r.deletions, r.missed_speakers) == (2, 2, 1)
    assert dict(r.assignment)["C"] is None


def test_identical_text_at_wrong_time():
    late = [dict(s, start_time=s["start_time"] + 20, end_time=s["end_time"] + 20) for s in REF]
    assert cpwer(REF, late).errors == cpwer_from_scratch(REF, late).errors == 0
    r = tcpwer_from_scratch(REF, late, collar=5.0)
    assert (r.errors, r.deletions, r.insertions) == (20, 10, 10)
    assert tcpwer(REF, late, collar=5.0) == r
    assert tcpwer_from_scratch(REF, late, collar=25.0).errors == 0  # a collar wider than the shift forgives it


def test_collar_boundary_is_strict():
    # one-word segments: the hypothesis point is the segment centre (1.5); the reference word is [2, 3]
    ref, hyp = [seg("A", 2.0, 3.0, "word")], [seg("x", 1.0, 2.0, "word")]
    assert tcpwer_from_scratch(ref, hyp, collar=0.5).errors == 2  # 1.5 + 0.5 touches 2.0: no overlap
    assert tcpwer_from_scratch(ref, hyp, collar=0.75).errors == 0
    for collar in (0.5, 0.75):
        same(tcpwer_from_scratch(ref, hyp, collar), meeteval_tcp(ref, hyp, collar))


def test_scene_input():
    scene = Scene(duration=4.0, sources=[
        Source(id="a", kind="speech", speaker="narrator", text="once upon a time", start=0.0, end=2.0),
        Source(id="b", kind="sfx", caption="a bell", start=1.0, end=2.0)])
    assert tcpwer(scene, scene, collar=0).errors == 0
    assert tcpwer_from_scratch(scene, [], collar=0).deletions == 4


def test_pseudo_word_timings():
    assert word_intervals(0, 8, ["abc", "b"]) == [(0.0, 6.0), (6.0, 8.0)]
    assert word_points(0, 8, ["abc", "b"]) == [(3.0, 3.0), (7.0, 7.0)]
    assert word_intervals(3, 4, ["solo"]) == [(3, 4)]


def test_align_words_time_constraint():
    # same words, but the second hypothesis word is far away in time: it cannot be paired
    al = align_words(["a", "b"], ["a", "b"], [(0, 1), (1, 2)], [(0.5, 0.5), (9, 9)])
    assert (al.errors, al.deletions, al.insertions) == (2, 1, 1)
    assert al.pairs == ((0, 0), (1, None), (None, 1))


@pytest.mark.parametrize("bad,message", [
    ("text", "expected a list"),
    ([["A", 0, 1, "x"]], "expected a dict"),
    ([dict(speaker="A", start_time=0, words="x")], "missing key 'end_time'"),
    ([dict(speaker="A", start_time=0, end_time=float("nan"), words="x")], "finite number"),
    ([dict(speaker="A", start_time=2, end_time=1, words="x")], "end_time"),
    ([dict(speaker=None, start_time=0, end_time=1, words="x")], "speaker"),
    ([dict(speaker="A", start_time=0, end_time=1, words=["x"])], "words"),
    ([seg("A", 0, 1, "x", "s1"), seg("A", 1, 2, "y", "s2")], "one session"),
])
def test_bad_input(bad, message):
    with pytest.raises((TypeError, ValueError), match=message):
        check_segments(bad)
    for f in (tcpwer, tcpwer_from_scratch, cpwer, cpwer_from_scratch):
        with pytest.raises((TypeError, ValueError), match=message):
            f(bad, REF)


def test_bad_collar_and_mismatched_sessions():
    for f in (tcpwer, tcpwer_from_scratch):
        for collar in (-1, float("nan"), float("inf"), True):
            with pytest.raises(ValueError, match="collar"):
                f(REF, REF, collar=collar)
    with pytest.raises(ValueError, match="differs"):
        tcpwer(REF, [seg("x", 0, 1, "a", "other")])


segments = st.lists(
    st.builds(lambda spk, start, dur, words: seg(spk, start / 10, (start + dur) / 10, " ".join(words)),
              st.sampled_from("ABC"), st.integers(0, 100), st.integers(1, 30),
              st.lists(st.sampled_from(VOCAB[:6]), min_size=1, max_size=4)),
    max_size=6)


@settings(max_examples=60, deadline=None)
@given(ref=segments, hyp=segments, collar=st.sampled_from([0, 0.3, 1.0]), relabel=st.permutations(["x", "y", "z"]))
def test_properties(ref, hyp, collar, relabel):
    tcp, cp = tcpwer_from_scratch(ref, hyp, collar), cpwer_from_scratch(ref, hyp)
    assert tcp.errors >= cp.errors  # the time constraint only removes pairings
    assert tcpwer_from_scratch(ref, hyp, 1e4).errors == cp.errors  # a collar covering everything is cpWER
    assert tcpwer_from_scratch(ref, ref, collar).errors == 0  # every point lies inside its own word
    names = dict(zip("ABC", relabel))
    renamed = [dict(s, speaker=names[s["speaker"]]) for s in hyp]
    assert tcpwer_from_scratch(ref, renamed, collar).errors == tcp.errors  # speaker names do not matter
    assert tcp.errors == meeteval_tcp(ref, hyp, collar).errors


# ---- frame-wise scorer, multiFLAM, Delta-multiFLAM, editFLAM ----
import random as _random  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import mannwhitneyu  # noqa: E402

from audiochat.eval.metrics import (
    StemOracleScorer,
    auroc,
    delta_multiflam,
    detection_scores,
    editflam,
    f1_score,
    multiflam,
    source_scores,
)
from audiochat.eval.scorer import (
    FrameScorer,
    OpenFLAMScorer,
    TinyFLAM,
    active_frames,
    caption_classes,
    frame_labels,
    scorer_examples,
    source_caption,
    source_class,
    train_scorer,
    unbiased_score,
)
from audiochat.sim.copilot import random_story  # noqa: E402
from audiochat.sim.stories import SUBTASKS, plan_edit
from audiochat.sim.tools import render  # noqa: E402


@pytest.fixture(scope="module")
def story():
    scene = random_story(_random.Random(11))
    return scene, render(scene, seed=5)


@pytest.fixture(scope="module")
def tiny_scorer():
    model, losses = train_scorer(scorer_examples(range(4)), steps=25, batch=4, frames=40)
    return model, losses


def test_auroc_matches_mann_whitney():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.random(50) < 0.3
        y[:2] = [True, False]
        s = np.round(rng.random(50) + y * rng.random(), 1)  # ties included
        u = mannwhitneyu(s[y], s[~y]).statistic
        assert auroc(s, y) == pytest.approx(u / (y.sum() * (~y).sum()))
    with pytest.raises(ValueError, match="both positive and negative"):
        auroc([0.1, 0.2], [1, 1])


def test_f1_score():
    assert f1_score([1, 1, 0, 0], [1, 0, 1, 0]) == pytest.approx(0.5)
    assert f1_score([0, 0], [0, 0]) == 1.0
    with pytest.raises(ValueError, match="differ in size"):
        f1_score([1], [1, 0])


def test_unbiased_score_neutral_point():
    b = torch.linspace(-6, 2, 9)
    assert torch.allclose(unbiased_score(b, b), torch.full_like(b, 0.5))
    assert (unbiased_score(b + 3, b) > 0.5).all() and (unbiased_score(b - 3, b) < 0.5).all()


def test_frame_labels_follow_the_stems(story):
    scene, r = story
    labels = frame_labels(r)
    classes = caption_classes()
    for s in scene.sources:
        c = source_class(s)
        assert c in classes and c in labels
        a = active_frames(r.stems[s.id])
        assert (labels[c] | a).equal(labels[c])
        assert not a[: int(s.start * 10)].any() and not a[int(np.ceil(s.end * 10)) + 1:].any()
    assert active_frames(torch.zeros(1, 16000)).sum() == 0


def test_tiny_scorer_trains_saves_and_loads(tiny_scorer, story, tmp_path):
    model, losses = tiny_scorer
    assert np.mean(losses[-5:]) < np.mean(losses[:5])
    scene, r = story
    texts = [source_caption(s) for s in scene.sources]
    s = model.frame_scores(r.mix, texts)
    assert s.shape == (len(texts), model.n_frames(scene.duration))
    assert isinstance(model, FrameScorer) and 0 <= s.min() and s.max() <= 1
    loaded = TinyFLAM.load(model.save(tmp_path / "scorer"))
    assert torch.equal(loaded.frame_scores(r.mix, texts), s)
    assert model.frame_scores(r.mix[0], texts).shape == s.shape  # mono works too
    with pytest.raises(ValueError, match="non-empty"):
        model.frame_scores(r.mix, ["rain", "  "])
    with pytest.raises(FileNotFoundError, match="config.json"):
        TinyFLAM.load(tmp_path / "missing")
    d = detection_scores(model, [r])
    assert 0 <= d["auroc"] <= 1 and 0 <= d["f1"] <= 1 and d["positives"] > 0


def test_openflam_adapter_needs_its_package():
    import importlib.util
    if importlib.util.find_spec("openflam") is not None:
        pytest.skip("openflam is installed")
    with pytest.raises(ImportError, match="pip install openflam"):
        OpenFLAMScorer()


def test_multiflam_ground_truth_and_removed_source(story):
    scene, r = story
    oracle = StemOracleScorer(r)
    assert multiflam(oracle, r.mix, scene) == 100.0
    assert multiflam(oracle, torch.zeros_like(r.mix), scene) == 0.0
    for s in scene.sources:
        q = source_scores(oracle, r.mix - r.stems[s.id], scene)
        assert [i for i, v in q.items() if v <= 0.5] == [s.id]
    with pytest.raises(ValueError, match="no sources"):
        multiflam(oracle, r.mix, type(scene)((), scene.duration))


def test_delta_multiflam_identical_copy_is_zero(story, tiny_scorer):
    scene, r = story
    for scorer in (StemOracleScorer(r), tiny_scorer[0]):
        assert delta_multiflam(scorer, r.mix, scene, r.mix.clone(), scene) == 0.0


@pytest.mark.parametrize("subtask", SUBTASKS)
def test_editflam_sign_of_correct_and_reverse_edits(story, subtask):
    scene, r = story
    edited, _ = plan_edit(scene, subtask, _random.Random(3))
    e = render(edited, seed=5)
    oracle = StemOracleScorer(r, e)
    forward = editflam(oracle, r.mix, scene, e.mix, edited)
    backward = editflam(oracle, e.mix, scene, r.mix, edited)
    assert forward > 1 and backward < -1
    assert forward == pytest.approx(-backward)
    assert editflam(oracle, r.mix, scene, r.mix, edited) == pytest.approx(0.0)  # copying the input scores 0
    assert delta_multiflam(oracle, r.mix, scene, e.mix, edited) < 5
    with pytest.raises(ValueError, match="no source edit"):
        editflam(oracle, r.mix, scene, r.mix, scene)


# ---- KAD and FAD ----
from audiochat.eval.metrics import clip_embedding, fad, kad, median_bandwidth  # noqa: E402


def kad_direct(x, y, s):
    "100 x unbiased MMD^2 with a Gaussian kernel, term by term."
    k = lambda a, b: math.exp(-float(((a - b) ** 2).sum()) / (2 * s * s))
    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(a, b) for a in x for b in y) / (n * m)
    return 100 * (xx + yy - 2 * xy)


def test_kad_matches_direct_formula():
    rng = np.random.default_rng(1)
    for n, m, d in [(2, 2, 1), (5, 8, 3), (12, 7, 16)]:
        x, y = rng.normal(size=(n, d)), rng.normal(0.3, 1.5, size=(m, d))
        dist = [np.linalg.norm(x[i] - x[j]) for i in range(n) for j in range(i + 1, n)]
        dist_y = [np.linalg.norm(y[i] - y[j]) for i in range(m) for j in range(i + 1, m)]
        assert median_bandwidth(x) == pytest.approx(np.median(dist))
        assert kad(x, y) == pytest.approx(kad_direct(x, y, np.median(dist_y)), rel=1e-9, abs=1e-12)  # kadtk: the evaluated set's
        assert kad(x, y, bandwidth_from="reference") == pytest.approx(kad_direct(x, y, np.median(dist)), rel=1e-9, abs=1e-12)
        assert kad(x, y, bandwidth=0.7) == pytest.approx(kad_direct(x, y, 0.7), rel=1e-9, abs=1e-12)


def test_kad_separates_distributions():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 4))
    same, shifted = rng.normal(size=(200, 4)), rng.normal(1.0, 1, size=(200, 4))
    assert abs(kad(x, same)) < 0.5 < kad(x, shifted)
    with pytest.raises(ValueError, match="embedding sizes differ"):
        kad(x, shifted[:, :3])
    with pytest.raises(ValueError, match="NaN"):
        kad(x, np.full((3, 4), np.nan))


def test_fad_matches_eigenvalue_formula():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 5)), rng.normal(0.5, 2, size=(30, 5)) @ rng.normal(size=(5, 5))
    cx, cy = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root_trace = np.sqrt(np.linalg.eigvals(cx @ cy).real.clip(0)).sum()
    direct = ((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(cx) + np.trace(cy) - 2 * root_trace
    assert fad(x, y) == pytest.approx(direct, rel=1e-7)
    assert fad(x, x) == pytest.approx(0.0, abs=1e-6)


def test_clip_embedding(tiny_scorer, story):
    model = tiny_scorer[0]
    e = clip_embedding(model, story[1].mix)
    assert e.shape == (model.config.dim,)
    with pytest.raises(TypeError, match="embed_audio"):
        clip_embedding(StemOracleScorer(story[1]), story[1].mix)


def test_best_f1_is_the_best_threshold():
    from audiochat.eval.metrics import best_f1
    rng = np.random.default_rng(4)
    for _ in range(20):
        y = rng.random(40) < 0.3
        s = np.round(rng.random(40) + 0.5 * y, 1)
        f, t = best_f1(s, y)
        assert f == pytest.approx(max(f1_score(s > u, y) for u in np.r_[s, -1.0]))
        assert f1_score(s > t, y) == pytest.approx(f)


def test_openflam_adapter_with_a_stand_in(monkeypatch):
    "The adapter's plumbing (48 kHz mono input, unbiased method, (texts, frames) output) against a local stand-in module."
    import sys
    import types

    calls = {}

    class StandIn:
        def __init__(self, model_name, default_ckpt_path):
            calls["init"] = (model_name, default_ckpt_path)

        def to(self, device):
            return self

        def get_local_similarity(self, audio, texts, method, cross_product):
            calls["audio"], calls["method"] = tuple(audio.shape), method
            return torch.rand(audio.shape[0], len(texts), 32)  # 32 frames per 10 s clip, as OpenFLAM

    monkeypatch.setitem(sys.modules, "openflam", types.SimpleNamespace(OpenFLAM=StandIn))
    scorer = OpenFLAMScorer(checkpoint_dir="ckpt")
    s = scorer.frame_scores(torch.zeros(2, 160_000), ["rain", "a dog barking"])
    assert s.shape == (2, 32) and calls["audio"] == (1, 480_000) and calls["method"] == "unbiased"
    assert calls["init"] == ("v1-base", "ckpt")
