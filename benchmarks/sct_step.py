"""Training-step time of the four AudioChat architectures and of the two attention-mask paths.

Usage: python benchmarks/sct_step.py [--preset tiny] [--batch 8] [--length 256] [--steps 10] [--device cpu|cuda]
Prints one row per arch: milliseconds per forward+backward+AdamW step and tokens per second. On CUDA it also
times the boolean-mask SDPA path against the FlexAttention block-mask path (compiled)."""

import argparse
import time

import torch
import torch.nn.functional as F

from audiochat.model.sct import ARCHS, AudioChatModel, count_parameters, flops_per_token, preset
from audiochat.model.transformer import Layout


def make_batch(config, B, T, device):
    n = T // 4
    layout = Layout.from_segments([[("text", n), ("audio", n), ("text", n), ("audio", T - 3 * n)]] * B, device=device)
    tokens = torch.randint(0, config.vocab_size, (B, T), device=device)
    latents = torch.randn(B, T, config.latent_dim, device=device)
    t = torch.where(layout.audio, torch.rand(B, T, device=device), torch.zeros((), device=device))
    return tokens, latents, t, layout


def step_time(model, args, steps, flex=False):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        out = model(*args, flex=flex)
        loss = F.mse_loss(out.audio_pred.float(), args[1])
        if out.text_logits is not None:
            loss = loss + out.text_logits.float().logsumexp(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()  # warm-up (and compilation)
    if args[0].is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if args[0].is_cuda:
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--length", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest for tiny models on a shared CPU)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"device {a.device}, preset {a.preset}, batch {a.batch} x length {a.length}, {a.steps} steps")
    print("| arch | params M | MFLOP/token fwd | ms/step (SDPA bool mask) | tokens/s | ms/step (flex) |")
    print("|---|---|---|---|---|---|")
    for arch in ARCHS:
        cfg = preset(a.preset, arch=arch)
        model = AudioChatModel(cfg).to(a.device)
        args = make_batch(cfg, a.batch, a.length, a.device)
        ms = step_time(model, args, a.steps) * 1e3
        flex = (
            f"{step_time(model, args, a.steps, flex=True) * 1e3:.1f}" if a.device == "cuda" else "- (CPU: no backward)"
        )
        print(
            f"| {arch} | {count_parameters(model) / 1e6:.2f} | {flops_per_token(cfg, a.length) / 1e6:.1f} | {ms:.1f} | "
            f"{a.batch * a.length / ms * 1e3:,.0f} | {flex} |"
        )


if __name__ == "__main__":
    main()
