"""Hidden solutions of tutorials/exercises.ipynb, and the checks that compare an answer with the audiochat package.

Try the exercises before reading this file. Each `check_*` function runs the learner's function when it is
implemented, or this file's solution when it still raises NotImplementedError, and asserts that the result matches
what the package computes. CI executes the exercises notebook with the stubs in place, so every solution here is
checked against the package on every run (tests/test_tutorial_solutions.py runs the same checks under pytest).
"""
import math

import torch

from audiochat.model.diffusion import add_noise, alpha_sigma, karras_sigmas, predict_x0, sample, time_from_noise_level
from audiochat.eval.wer import tcpwer
from audiochat.model.transformer import AUDIO, TEXT, Layout, build_mask

# ---------------------------------------------------------------- exercise 1: the span-bidirectional mask

def span_mask(span: torch.Tensor) -> torch.Tensor:
    "Solution: causal everywhere, plus every pair of positions inside the same audio span (span id >= 0)."
    T = span.shape[0]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    same_span = (span[:, None] == span[None, :]) & (span[:, None] >= 0)
    return causal | same_span


def _layout(span: torch.Tensor) -> Layout:
    s = span[None]
    zeros = torch.zeros_like(s)
    return Layout(torch.where(s >= 0, AUDIO, TEXT), s, zeros, zeros.bool(), zeros.bool())


# ---------------------------------------------------------------- exercise 2: noising with v-prediction

def v_target(x0: torch.Tensor, eps: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
    "Solution: alpha = cos(pi t / 2), sigma = sin(pi t / 2); x_t = alpha x0 + sigma eps, v = alpha eps - sigma x0."
    a, s = math.cos(math.pi * t / 2), math.sin(math.pi * t / 2)
    return a * x0 + s * eps, a * eps - s * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, t: float) -> torch.Tensor:
    "Solution: alpha x_t - sigma v = alpha^2 x0 + alpha sigma eps - sigma alpha eps + sigma^2 x0 = x0."
    a, s = math.cos(math.pi * t / 2), math.sin(math.pi * t / 2)
    return a * x_t - s * v


# ---------------------------------------------------------------- exercise 3: one DPM-Solver++(2M) step

def dpmpp_2m_step(x, x0, x0_previous, sigma, sigma_next, sigma_previous):
    """Solution. sigma = noise-to-signal ratios (Karras sigmas) of the current, next and previous level; in the
    variance-preserving process alpha = 1 / sqrt(1 + sigma^2), s = sigma / sqrt(1 + sigma^2), lambda = -log sigma."""
    a_next = 1 / math.sqrt(1 + sigma_next ** 2)
    s, s_next = sigma / math.sqrt(1 + sigma ** 2), sigma_next / math.sqrt(1 + sigma_next ** 2)
    if sigma_next == 0: return a_next * x0  # the last step lands on the estimate
    h = math.log(sigma) - math.log(sigma_next)  # lambda_next - lambda
    d = x0
    if x0_previous is not None:  # second order: extrapolate the estimate linearly in lambda
        r = (math.log(sigma_previous) - math.log(sigma)) / h
        d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * x0_previous
    return (s_next / s) * x - a_next * math.expm1(-h) * d


def _toy_denoiser(x, t):
    "A fixed, smooth 'model' (v-prediction) so that both samplers see exactly the same function."
    a, s = alpha_sigma(t[:, None], "cosine_v")
    x0_hat = torch.tanh(x) * 0.8 + 0.1
    return (a * x - x0_hat) / s.clamp_min(1e-6)


# ---------------------------------------------------------------- exercise 4: tcpWER by hand

TCP_REFERENCE = [
    dict(speaker="A", start_time=0.0, end_time=1.0, words="the rain starts"),
    dict(speaker="B", start_time=1.5, end_time=2.5, words="close the door"),
]
TCP_HYPOTHESIS = [
    dict(speaker="spk1", start_time=0.1, end_time=1.1, words="the rain stops"),
    dict(speaker="spk2", start_time=1.5, end_time=2.5, words="close door"),
    dict(speaker="spk2", start_time=6.0, end_time=6.5, words="now"),
]
TCP_COLLAR = 0.5


def tcpwer_by_hand() -> tuple[int, int]:
    """Solution: speakers pair up as A <-> spk1 and B <-> spk2 (any other assignment costs more).
    A vs spk1: "the rain starts" / "the rain stops", times overlap (hypothesis word centres +- 0.5 s fall on the
    reference words): 1 substitution. B vs spk2: "close the door" / "close door now": "the" is missing (1 deletion);
    "now" at 6.25 s is far outside any reference word, so it cannot pair with anything: 1 insertion.
    Errors 3, reference words 6: tcpWER = 50%."""
    return 3, 6


# ---------------------------------------------------------------- the checks

_said = set()

def _pick(name: str, mine, solution, *args):
    "The learner's result if the function is implemented, else the solution's (and say which, once per check)."
    try: out, whose = mine(*args), "your implementation"
    except NotImplementedError: out, whose = solution(*args), "the hidden solution (yours is not implemented yet)"
    if name not in _said: print(f"{name}: checking {whose}"); _said.add(name)
    return out


def check_span_mask(mine=span_mask):
    _said.clear()
    for span in (torch.tensor([-1, -1, 0, 0, 0, -1, 1, 1, -1]), torch.tensor([0, 0, -1, 1, 1, 1]), torch.tensor([-1, -1, -1])):
        got = _pick("span_mask", mine, span_mask, span)
        want = build_mask(_layout(span))[0, 0]
        assert got.dtype == torch.bool and got.shape == want.shape, f"expected a bool ({len(span)}, {len(span)}) mask, got {got.dtype} {tuple(got.shape)}"
        assert torch.equal(got, want), f"mask differs from audiochat.model.transformer.build_mask for span ids {span.tolist()}:\n{got.int()}\nvs\n{want.int()}"
    print("span_mask matches audiochat.model.transformer.build_mask")


def check_v_target(mine_target=v_target, mine_x0=x0_from_v):
    _said.clear()
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    for t in (0.0, 0.3, 0.75, 1.0):
        x_t, v = _pick("v_target", mine_target, v_target, x0, eps, t)
        want_x, want_v = add_noise(x0, eps, t, "cosine_v")
        torch.testing.assert_close(x_t, want_x); torch.testing.assert_close(v, want_v)
        if t < 1:
            back = _pick("x0_from_v", mine_x0, x0_from_v, x_t, v, t)
            torch.testing.assert_close(back, predict_x0(want_x, want_v, t, "cosine_v"))
            torch.testing.assert_close(back, x0, atol=1e-5, rtol=1e-5)
    print("v_target and x0_from_v match audiochat.model.diffusion.add_noise and predict_x0")


def check_dpmpp_2m(mine=dpmpp_2m_step, steps: int = 12):
    "Replays a whole DPM-Solver++(2M) trajectory with the step function and compares it with audiochat.model.diffusion.sample."
    _said.clear()
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(3, 5, generator=g, dtype=torch.float64)
    sigmas = karras_sigmas(steps, sigma_min=0.01, sigma_max=20.0)
    want, trajectory = sample(_toy_denoiser, (3, 5), steps, sigmas=sigmas, noise=noise, return_trajectory=True, dtype=torch.float64)
    sig = sigmas.tolist()
    x = noise  # variance preserving: pure noise has unit variance at every level
    previous = None
    for i in range(len(sig) - 1):
        t = time_from_noise_level(torch.tensor(sig[i], dtype=torch.float64)).expand(3).to(x.dtype)
        x0 = predict_x0(x, _toy_denoiser(x, t), t, "cosine_v")
        args = (x, x0, previous, sig[i], sig[i + 1], sig[i - 1] if i else None)
        x_next = _pick("dpmpp_2m_step", mine, dpmpp_2m_step, *args)
        torch.testing.assert_close(x_next, trajectory[i + 1].to(x_next.dtype), atol=1e-6, rtol=1e-6,
                                   msg=lambda m: f"step {i} (sigma {sig[i]:.3g} -> {sig[i + 1]:.3g}) differs from audiochat.model.diffusion.sample: {m}")
        x, previous = x_next, x0
    torch.testing.assert_close(x, want.to(x.dtype))
    print(f"dpmpp_2m_step reproduces audiochat.model.diffusion.sample over {steps} steps")


def check_tcpwer(mine=tcpwer_by_hand):
    _said.clear()
    errors, words = _pick("tcpwer_by_hand", mine, tcpwer_by_hand)
    r = tcpwer(TCP_REFERENCE, TCP_HYPOTHESIS, collar=TCP_COLLAR)
    assert (errors, words) == (r.errors, r.length), f"you counted {errors} errors in {words} words; MeetEval counts {r.errors} in {r.length}"
    print(f"tcpWER by hand = {errors}/{words} = {errors / words:.0%}, as audiochat.eval.wer.tcpwer (MeetEval) computes")


def check_all():
    check_span_mask(); check_v_target(); check_dpmpp_2m(); check_tcpwer()
