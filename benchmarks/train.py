"""Training throughput of each architecture with the training loop's parts: packed synthetic dialogues from the data
stream, the forcing loss, AdamW with clipping. Prints tokens/s, audio seconds/s, peak memory and MFU.

Usage: python benchmarks/train.py [--preset tiny] [--steps 20] [--archs sct dense mot dit] [--device cpu|cuda]
                                  [--peak-tflops X] [--compile] [--planned SHARE]
The model and its AdamW come from `audiochat.training.train.build_model` (as the training loop builds them). `--planned 0.75`
makes that share of the micro-batches text-only planned dialogues (batches of 2 x batch_size), as the tiny preset's
`make demo` recipe mixes them; the tokenizer is then trained on their text too.
MFU = training FLOPs per token (3 x forward, `flops_per_token` at the batch's padded length) x tokens/s / peak FLOP/s.
Peak FLOP/s: on CUDA give --peak-tflops (e.g. 989 for H100 bf16 dense); on the CPU it is assumed to be
threads x clock (from /proc/cpuinfo) x FLOPs per cycle per core (--flops-per-cycle, default 64: two 512-bit FMA pipes
in fp32, as on AMD Zen 4/5 and Intel server cores with AVX-512; use 32 for AVX2-only cores). A large fp32 matmul's
measured FLOP/s is printed next to it as the attainable reference; `% mm` is the training FLOP/s as a share of it.
`cpu ms` is the process's CPU time per step (both threads): steadier than wall time on a CPU shared with other work."""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import torch


def cpu_clock_ghz() -> float:
    try:
        mhz = [float(l.split(":")[1]) for l in open("/proc/cpuinfo") if l.lower().startswith("cpu mhz")]
        return max(mhz) / 1000
    except (OSError, ValueError):
        return float("nan")


def matmul_flops(n: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeats): a @ b
    return 2 * n ** 3 * repeats / (time.perf_counter() - t0)


def run_arch(args) -> dict:
    "One architecture in this process (so that peak memory is its own)."
    from audiochat.model.forcing import forcing_loss
    from audiochat.model.sct import count_parameters, flops_per_token
    from audiochat.model.tokenizer import special_token_ids, train_tokenizer
    from audiochat.runs.config import resolve
    from audiochat.training.parallel import noise_generator
    from audiochat.training.run_data import prepare_data
    from audiochat.training.streams import BatchStream, MixedStream, PlannedSource, synthetic_texts
    from audiochat.training.train import build_model
    torch.manual_seed(0)
    config = resolve(args.preset, overrides=[f"--model.arch={args.arch}", "--data.source=synthetic", f"--run.compile={str(args.compile).lower()}"] + args.set)
    device, d = torch.device(args.device), config.data
    planned = PlannedSource(500, 0, d.max_turns, latent_dim=config.model.latent_dim) if args.planned else None
    with tempfile.TemporaryDirectory() as out:
        if planned is not None:  # a tokenizer that knows the planned scenes' text, as a demo run's does
            train_tokenizer(synthetic_texts(400) + planned.texts(), vocab_size=config.model.vocab_size).save_pretrained(f"{out}/tokenizer")
        tokenizer, streams, _ = prepare_data(config, out)
    end_id = special_token_ids(tokenizer)["audio_end"]
    stream = streams[0]
    if planned is not None: stream = MixedStream(stream, BatchStream(planned, tokenizer, 2 * d.batch_size, d.window, 2), args.planned)
    batches = [stream[g].to(device) for g in range(args.steps + args.warmup)]
    model, call, opt, _ = build_model(config, None, device)
    bf16 = device.type == "cuda"
    if device.type == "cuda": torch.cuda.reset_peak_memory_stats()
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tokens = frames = flops = 0
    for i, batch in enumerate(batches):
        if i == args.warmup:
            if device.type == "cuda": torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = forcing_loss(call, batch, config.loss, end_id, noise_generator(0, i))
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if i >= args.warmup:
            n = int((~batch.layout.pad).sum())
            tokens += n; frames += int(batch.layout.audio.sum())
            text_only = not batch.layout.audio.any() and args.arch != "dit"  # the loss runs the text path alone
            flops += 3 * flops_per_token(config.model, batch.tokens.shape[1], text_only) * batch.tokens.numel()  # padded positions cost too
    if device.type == "cuda": torch.cuda.synchronize()
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return dict(arch=args.arch, params=count_parameters(model), tokens_per_s=tokens / dt, audio_seconds_per_s=frames / config.codec.frame_rate / dt,
                step_ms=1000 * dt / args.steps, cpu_ms=1000 * cpu / args.steps, flops_per_s=flops / dt, peak_bytes=peak,
                rss_growth_bytes=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) * 1024,
                batch=config.data.batch_size, mean_length=sum(b.tokens.shape[1] for b in batches) / len(batches))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny"); p.add_argument("--steps", type=int, default=20); p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--archs", nargs="+", default=["sct", "dense", "mot", "dit"]); p.add_argument("--arch", default=None)
    p.add_argument("--device", default="cpu"); p.add_argument("--compile", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=None); p.add_argument("--flops-per-cycle", type=int, default=64)
    p.add_argument("--planned", type=float, default=0.0, help="share of text-only planned micro-batches (make demo: 0.75)")
    p.add_argument("--set", nargs="*", default=[], help="config overrides, e.g. --set --data.batch_size=8")
    args = p.parse_args()
    if args.arch:  # child process
        print(json.dumps(run_arch(args))); return
    threads = torch.get_num_threads()
    if args.peak_tflops: peak = args.peak_tflops * 1e12; how = "given"
    else:
        ghz = cpu_clock_ghz(); peak = threads * ghz * 1e9 * args.flops_per_cycle
        how = f"{threads} thread(s) x {ghz:.2f} GHz x {args.flops_per_cycle} FLOP/cycle"
    print(f"device {args.device}, preset {args.preset}, torch threads {threads}, peak {peak / 1e9:.0f} GFLOP/s ({how})")
    mm = matmul_flops() if args.device == "cpu" else float("nan")
    if args.device == "cpu": print(f"measured fp32 1024^3 matmul: {mm / 1e9:.0f} GFLOP/s")
    print(f"{'arch':<6} {'params':>8} {'batch':>5} {'len':>5} {'ms/step':>8} {'cpu ms':>7} {'tokens/s':>9} {'audio s/s':>9} {'peak MB':>8} "
          f"{'MFU %':>6} {'% mm':>6}")
    for arch in args.archs:
        cmd = [sys.executable, __file__, "--arch", arch, "--preset", args.preset, "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--device", args.device, "--planned", str(args.planned)] + (["--compile"] if args.compile else []) + (["--set", *args.set] if args.set else [])
        res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
        if res.returncode: print(f"{arch}: failed\n{res.stderr[-1500:]}"); continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        print(f"{arch:<6} {r['params'] / 1e6:7.2f}M {r['batch']:>5} {r['mean_length']:5.0f} {r['step_ms']:8.1f} {r['cpu_ms']:7.0f} {r['tokens_per_s']:9.0f} "
              f"{r['audio_seconds_per_s']:9.1f} {r['peak_bytes'] / 2**20:8.0f} {100 * r['flops_per_s'] / peak:6.2f} {100 * r['flops_per_s'] / mm:6.1f}", flush=True)


if __name__ == "__main__":
    main()
