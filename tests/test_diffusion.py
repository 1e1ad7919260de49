"""Diffusion: parameterisation identities, Karras sigmas and samplers against diffusers, guidance, bad inputs."""
import math

import pytest
import torch
from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

from audiochat.model.diffusion import (
    PROCESSES,
    add_noise,
    alpha_sigma,
    classifier_free_guidance,
    karras_sigmas,
    mixture_denoiser,
    noise_level,
    predict_x0,
    prediction_from_x0,
    sample,
    sample_noise_level,
    time_from_noise_level,
)

MEANS = torch.randn(5, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
DENOISE = mixture_denoiser(MEANS, 0.3, weights=torch.tensor([0.1, 0.2, 0.3, 0.25, 0.15]))
NOISE = torch.randn(4, 20, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)  # (B, T, D) latents


def _levels(sched):
    "sigma_min, sigma_max of a diffusers scheduler's training schedule, in float64."
    ac = sched.alphas_cumprod.double()
    s = ((1 - ac) / ac).sqrt()
    return s[0].item(), s[-1].item()


def _denoise_at_level(x, level):
    t = time_from_noise_level(torch.full(x.shape[:1], float(level), dtype=torch.float64))
    return DENOISE(x, t), t


@pytest.mark.parametrize("beta_schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("steps", [2, 5, 10, 25, 150])
def test_karras_sigmas_match_diffusers(beta_schedule, steps):
    sched = DPMSolverMultistepScheduler(beta_schedule=beta_schedule, algorithm_type="dpmsolver++",
                                        use_karras_sigmas=True, prediction_type="v_prediction")
    sched.set_timesteps(steps)
    lo, hi = _levels(sched)
    ours = karras_sigmas(steps, lo, hi)
    assert len(ours) == len(sched.sigmas) == steps + 1
    torch.testing.assert_close(ours.float(), sched.sigmas, rtol=1e-6, atol=0)
    assert ours[-1] == 0 == sched.sigmas[-1]


def _diffusers_dpmpp_2m(steps, beta_schedule="linear"):
    sched = DPMSolverMultistepScheduler(beta_schedule=beta_schedule, algorithm_type="dpmsolver++",
                                        use_karras_sigmas=True, prediction_type="v_prediction")
    sched.set_timesteps(steps)
    sched.set_begin_index(0)  # integer timesteps can repeat (squaredcos_cap_v2); start at the first step regardless
    x, out = NOISE.clone(), [NOISE]
    for i, step_t in enumerate(sched.timesteps):
        v, _ = _denoise_at_level(x, sched.sigmas[i])
        x = sched.step(v.float(), step_t, x.float()).prev_sample.double()
        out.append(x)
    return sched, out


@pytest.mark.parametrize("beta_schedule", ["linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("steps", [3, 5, 10, 25, 150])
def test_dpmpp_2m_trajectory_matches_diffusers(steps, beta_schedule):
    sched, theirs = _diffusers_dpmpp_2m(steps, beta_schedule)
    lo, hi = _levels(sched)
    x, ours = sample(DENOISE, NOISE.shape, steps, "dpmpp_2m", sigma_min=lo, sigma_max=hi, noise=NOISE,
                     return_trajectory=True)
    assert len(ours) == len(theirs) == steps + 1
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=0, atol=5e-5)  # diffusers steps in float32
    torch.testing.assert_close(x, theirs[-1], rtol=0, atol=5e-5)
    # the comparison is sharp enough to tell the samplers apart
    euler = sample(DENOISE, NOISE.shape, steps, "euler", sigma_min=lo, sigma_max=hi, noise=NOISE)
    assert (euler - theirs[-1]).abs().max() > 1e-3


@pytest.mark.parametrize("steps", [4, 10, 30])
def test_euler_matches_diffusers_euler(steps):
    sched = EulerDiscreteScheduler(use_karras_sigmas=True, prediction_type="v_prediction")
    sched.set_timesteps(steps)
    lo, hi = _levels(sched)
    _, ours = sample(DENOISE, NOISE.shape, steps, "euler", sigma_min=lo, sigma_max=hi, noise=NOISE,
                     return_trajectory=True)
    # diffusers' Euler state is z = x / alpha (variance exploding); the model sees z / sqrt(1 + sigma^2) = x
    z = NOISE * math.sqrt(1 + hi**2)
    for i, step_t in enumerate(sched.timesteps):
        level = sched.sigmas[i].double()
        x = sched.scale_model_input(z.float(), step_t).double()
        v, t = _denoise_at_level(x, level)
        z = sched.step(v.float(), step_t, z.float()).prev_sample.double()
        alpha = alpha_sigma(time_from_noise_level(karras_sigmas(steps, lo, hi)[i + 1]))[0].item()
        torch.testing.assert_close(ours[i + 1] / alpha, z, rtol=0, atol=1e-4)


def test_ddim_is_euler_and_first_order_dpm():
    a = sample(DENOISE, NOISE.shape, 7, "ddim", noise=NOISE)
    b = sample(DENOISE, NOISE.shape, 7, "euler", noise=NOISE)
    assert torch.equal(a, b)
    # DDIM written out: x_next = alpha_next * x0_hat + sigma_next * eps_hat
    sig = karras_sigmas(7)
    ts = time_from_noise_level(sig)
    x = NOISE.clone()
    for t0, t1 in zip(ts[:-1], ts[1:]):
        tt = torch.full((4,), t0.item(), dtype=torch.float64)
        x0 = predict_x0(x, DENOISE(x, tt), tt)
        a0, s0 = alpha_sigma(t0)
        a1, s1 = alpha_sigma(t1)
        x = a1 * x0 + s1 * (x - a0 * x0) / s0
    torch.testing.assert_close(x, a, rtol=0, atol=1e-9)


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m"])
def test_flow_and_v_sample_identically(sampler):
    flow = mixture_denoiser(MEANS, 0.3, process="flow")
    v = mixture_denoiser(MEANS, 0.3)
    torch.testing.assert_close(sample(flow, NOISE.shape, 12, sampler, noise=NOISE, process="flow"),
                               sample(v, NOISE.shape, 12, sampler, noise=NOISE), rtol=0, atol=1e-9)


@pytest.mark.parametrize("process", PROCESSES)
def test_parameterisation_round_trips(process):
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(3, 7, 5, generator=g, dtype=torch.float64), torch.randn(3, 7, 5, generator=g, dtype=torch.float64)
    for t in (torch.rand(3, generator=g, dtype=torch.float64), torch.rand(3, 7, generator=g, dtype=torch.float64), 0.25):
        x_t, target = add_noise(x0, eps, t, process)
        torch.testing.assert_close(predict_x0(x_t, target, t, process), x0)
        torch.testing.assert_close(prediction_from_x0(x_t, x0, t, process), target)
        tt = torch.as_tensor(t, dtype=torch.float64)
        a, s = alpha_sigma(tt.reshape(tt.shape + (1,) * (3 - tt.ndim)), process)
        torch.testing.assert_close(x_t, a * x0 + s * eps)
    ts = torch.linspace(0.01, 0.99, 50, dtype=torch.float64)
    torch.testing.assert_close(time_from_noise_level(noise_level(ts, process), process), ts)


def test_v_target_values():
    x0, eps = torch.tensor([[2.0]]), torch.tensor([[-1.0]])
    _, v0 = add_noise(x0, eps, 0.0)
    _, v1 = add_noise(x0, eps, 1.0)
    torch.testing.assert_close(v0, eps)  # t = 0: v = eps
    torch.testing.assert_close(v1, -x0, atol=1e-6, rtol=0)  # t = 1: v = -x0
    _, u = add_noise(x0, eps, 0.3, "flow")
    torch.testing.assert_close(u, eps - x0)


def test_guidance():
    cond = mixture_denoiser(MEANS[:1], 0.3)
    calls = []
    def uncond(x, t):
        calls.append(1)
        return DENOISE(x, t)
    a = sample(cond, NOISE.shape, 6, cfg_scale=1.0, uncond_fn=uncond, noise=NOISE)
    assert not calls  # scale 1 never runs the unconditional model
    torch.testing.assert_close(a, sample(cond, NOISE.shape, 6, noise=NOISE))
    b = sample(cond, NOISE.shape, 6, cfg_scale=3.0, uncond_fn=uncond, noise=NOISE)
    manual = lambda x, t: DENOISE(x, t) + 3.0 * (cond(x, t) - DENOISE(x, t))
    torch.testing.assert_close(b, sample(manual, NOISE.shape, 6, noise=NOISE))
    assert len(calls) == 6
    assert (a - b).abs().max() > 1e-3
    guided = classifier_free_guidance(cond, DENOISE, 0.0)
    t = torch.full((4,), 0.5, dtype=torch.float64)
    torch.testing.assert_close(guided(NOISE, t), DENOISE(NOISE, t))


def test_sample_shapes_dtype_generator():
    fn = mixture_denoiser(MEANS.float(), 0.3)
    a = sample(fn, (2, 9, 16), 4, generator=torch.Generator().manual_seed(3))
    b = sample(fn, (2, 9, 16), 4, generator=torch.Generator().manual_seed(3))
    assert a.shape == (2, 9, 16) and a.dtype == torch.float32 and torch.equal(a, b)
    seen = []
    sample(lambda x, t: seen.append(t) or torch.zeros_like(x), (3, 2, 16), 5)
    assert len(seen) == 5 and all(t.shape == (3,) and 0 < t[0] < 1 for t in seen)
    assert all(seen[i][0] > seen[i + 1][0] for i in range(4))  # from noise towards data
    custom = torch.tensor([10.0, 1.0, 0.1, 0.0])
    x = sample(fn, (2, 16), 99, sigmas=custom, noise=torch.zeros(2, 16))
    assert x.shape == (2, 16)


def test_sample_noise_level():
    g = torch.Generator().manual_seed(4)
    t = sample_noise_level((2000, 3), g)
    assert t.shape == (2000, 3) and t.min() >= 0 and t.max() <= 1
    assert abs(t.mean() - 0.5) < 0.02 and abs(t.var() - 1 / 12) < 0.01  # uniform
    ln = sample_noise_level(5000, g, "logit_normal")
    assert ln.shape == (5000,) and ln.var() < 1 / 12  # concentrated in the middle
    assert torch.corrcoef(t.T)[0, 1].abs() < 0.1  # independent columns (one level per span)


def test_bad_inputs():
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        karras_sigmas(0)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        karras_sigmas(5, 2.0, 1.0)
    with pytest.raises(ValueError, match="rho must be > 0"):
        karras_sigmas(5, rho=0)
    with pytest.raises(ValueError, match="process must be one of"):
        add_noise(NOISE, NOISE, 0.5, "edm")
    with pytest.raises(ValueError, match="does not match the leading dims"):
        add_noise(NOISE, NOISE, torch.rand(5))
    with pytest.raises(ValueError, match="same shape"):
        add_noise(NOISE, NOISE[:2], 0.5)
    with pytest.raises(ValueError, match="sampler must be one of"):
        sample(DENOISE, NOISE.shape, 4, "heun")
    with pytest.raises(ValueError, match="needs an uncond_fn"):
        sample(DENOISE, NOISE.shape, 4, cfg_scale=3)
    with pytest.raises(ValueError, match="decreasing"):
        sample(DENOISE, NOISE.shape, 4, sigmas=torch.tensor([1.0, 2.0, 0.0]))
    with pytest.raises(ValueError, match="noise has shape"):
        sample(DENOISE, (2, 3, 16), 4, noise=NOISE)
    with pytest.raises(ValueError, match="distribution must be one of"):
        sample_noise_level(3, distribution="beta")
    with pytest.raises(ValueError, match="means must have shape"):
        mixture_denoiser(torch.zeros(3), 1.0)
    with pytest.raises(ValueError, match="noise levels must be >= 0"):
        time_from_noise_level(-1.0)
