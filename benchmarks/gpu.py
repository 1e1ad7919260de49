"""One GPU, one unattended run (about 9 minutes on an H100/H200): model throughput and MFU, the small preset end to end,
and chat latency. Prints one table and writes results.json (to --out, default runs/gpu/) after every stage, atomically,
so a run cut short still leaves its figures. A stage that fails (a crash under torch.compile, out of memory, a missing
tool) is recorded with its error and the run goes on with the next stage.

Usage: python benchmarks/gpu.py                  # the whole run (make gpu)
       python benchmarks/gpu.py --dry --threads 1  # a tiny CPU form of every stage, about a minute (make gpu-dry)
       python benchmarks/gpu.py --skip e2e chat --sizes 90M --compile on   # shorter

Stages
  throughput  training steps (forward, loss, backward, fused AdamW, bf16 autocast) on synthetic batches of B x T
              positions, for the SCT (`AudioChatModel`, arch "sct": text and audio spans, AudioChat's mask: causal
              text, bidirectional spans, packed documents) and for a plain decoder of the same width and depth
              (`audiochat.model.transformer.Transformer`, text only, causal), at about 30M / 90M / 200M non-embedding
              parameters, torch.compile on and off. Attention kernels ("kernel" column):
                flex         FlexAttention block mask (`transformer.block_mask`): the AudioChat mask for the SCT, the
                             causal mask for the plain decoder
                sdpa-mask    scaled_dot_product_attention with the boolean mask of `transformer.build_mask` (the path
                             training uses today: `forcing_loss` calls the model without flex)
                sdpa-causal  plain decoder only: SDPA with is_causal=True (flash attention), the DESIGN.md anchor
              The SCT/plain ratio (tokens/s and MFU) is taken in the same run against the plain decoder with the same
              kernel and compile setting, and against sdpa-causal (the anchor: the SCT should come within 0.9x).
              "compile" is regional by default (every decoder layer compiled; identical layers share one compiled
              graph, so compiling takes seconds, not minutes); --compile-mode model compiles the whole model.
              Without compile the flex kernel is still the compiled FlexAttention kernel (as the package runs it).
  e2e         the small preset end to end: build the data with all cores (`audiochat data build --preset small
              --workers N`, --dialogues shrinks it) and StoryGen-Eval-mini; fit/train the codec (`codec_preset("tiny")`
              when it is the mel codec, else the VAE `small` preset) for --codec-minutes; encode the latents; train
              `resolve("small")` for --train-minutes (a 30-step probe measures the step time, then optim.steps is set
              so that the run with its cosine schedule fits the minutes); `audiochat eval` on StoryGen-Eval-mini
              (--eval-dialogues; the package's eval runs checkpoints on the CPU); benchmarks/learning.py's figures
              when that file exists.
  chat        latency of a 10-second story with `ChatEngine` on the GPU: CoT tokens/s (256 tokens, without and with
              the scene grammar), DPM-Solver++ steps/s with CFG, codec decode; the e2e run's model, or (when there is
              none) a small-shaped model trained for a few steps (latency does not depend on training).

FLOPs per token of a training step (PaLM's MFU convention, no causal discount, same formula for SCT and plain):
    FLOPs/token = 6 N + 12 L H d_head T
    N = parameters that multiply activations: every parameter except the input token embedding (the output head,
        the SCT's audio input, time MLP, gen_in and diffusion head count); L = layers (SCT: U + G); H heads of d_head;
    T = sequence length. MFU = FLOPs/token x tokens/s / peak, peak = dense bf16 of the detected GPU (H100 SXM and H200:
    989 TFLOP/s; see PEAK_TFLOPS); an unknown GPU or the CPU: tokens/s only (or give --peak-tflops).
The size names (30M, 90M, 200M) count the decoder layers only (non-embedding, without the output head)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch._dynamo
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# dense bf16 TFLOP/s from NVIDIA's data sheets, matched against torch.cuda.get_device_name() (first match wins)
PEAK_TFLOPS = [("H200", 989.0), ("H100 NVL", 835.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0),
               ("A100", 312.0)]

# (name, d_model, heads, U understanding layers, G generation layers); head_dim 64, MHA; plain decoder: U + G layers
SIZES = {"30M": (512, 8, 6, 3), "90M": (768, 12, 9, 4), "200M": (1024, 16, 11, 5)}
DRY_SIZES = {"tiny": (64, 4, 2, 1)}


# ---------------------------------------------------------------------------------------------------------- results
class Results:
    "results.json, rewritten atomically after every change."
    def __init__(self, path: Path, meta: dict):
        self.path, self.doc = path, dict(meta=meta, stages={}, throughput=[])
        path.parent.mkdir(parents=True, exist_ok=True)
        self.write()

    def write(self):
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.doc, indent=1, default=str) + "\n")
        os.replace(tmp, self.path)

    def stage(self, name: str, **fields):
        self.doc["stages"].setdefault(name, {}).update(fields); self.write()


def run_stage(results: Results, name: str, fn, *args, **kwargs):
    "Run one stage; its figures, or its error, go into results.json. Returns fn's value or None."
    print(f"\n=== {name}", flush=True)
    t0 = time.perf_counter()
    results.stage(name, status="running")
    try:
        out = fn(*args, **kwargs)
        results.stage(name, status="ok", seconds=round(time.perf_counter() - t0, 1))
        return out
    except Skip as e:
        print(f"{name}: skipped ({e})")
        results.stage(name, status="skipped", reason=str(e), seconds=round(time.perf_counter() - t0, 1))
    except BaseException as e:  # noqa: BLE001  (KeyboardInterrupt too: record it, then stop)
        print(f"{name}: FAILED {type(e).__name__}: {e}", flush=True)
        results.stage(name, status="error", error=f"{type(e).__name__}: {str(e)[:2000]}",
                      traceback=traceback.format_exc()[-4000:], seconds=round(time.perf_counter() - t0, 1))
        if isinstance(e, KeyboardInterrupt): raise
    finally:
        free_memory()
    return None


class Skip(Exception): "A stage that cannot run here (no time left, no input): recorded as skipped."


def free_memory():
    import gc
    gc.collect()
    if torch.cuda.is_available(): torch.cuda.empty_cache()


def peak_flops(device: torch.device, given: float | None) -> tuple[float | None, str]:
    if given: return given * 1e12, f"given: {given:g} TFLOP/s"
    if device.type != "cuda": return None, "CPU: tokens/s only"
    name = torch.cuda.get_device_name(device)
    for key, tflops in PEAK_TFLOPS:
        if key in name: return tflops * 1e12, f"{name}: {tflops:g} TFLOP/s dense bf16"
    return None, f"{name}: unknown peak, tokens/s only (give --peak-tflops)"


# ------------------------------------------------------------------------------------------------------- throughput
def sct_layout(B: int, T: int, device):
    "Rows of text (112) / audio span (400 frames, 10 s) pairs, a new packed document every two pairs."
    from audiochat.model.transformer import Layout
    text, audio = max(1, T * 112 // 1024), max(1, T * 400 // 1024)
    row, n, doc = [], 0, 0
    while n < T:
        for kind, length in (("text", text), ("audio", audio)):
            length = min(length, T - n)
            if length: row.append((kind, length, doc)); n += length
        if sum(1 for s in row if s[0] == "audio") % 2 == 0: doc += 1
    return Layout.from_segments([row] * B, device=device)


def plain_causal_layer(layer, x, cos, sin):
    "A package DecoderLayer run with SDPA is_causal=True (flash attention) instead of an explicit mask."
    from audiochat.model.transformer import apply_rotary
    a, h = layer.self_attn, layer.input_layernorm(x)
    q = apply_rotary(a.split(a.q_proj(h), a.n_heads), cos, sin)
    k = apply_rotary(a.split(a.k_proj(h), a.n_kv_heads), cos, sin)
    v = a.split(a.v_proj(h), a.n_kv_heads)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=a.n_heads != a.n_kv_heads)
    x = x + a.o_proj(o.transpose(1, 2).flatten(2))
    return x + layer.mlp(layer.post_attention_layernorm(x))


def build_case(arch: str, kernel: str, shape, vocab: int, latent_dim: int, B: int, T: int, device, compile_mode: str):
    "(model, step closure inputs) of one throughput case."
    from audiochat.model.sct import AudioChatModel, ModelConfig
    from audiochat.model.transformer import Layout, Transformer, TransformerConfig
    d, H, U, G = shape
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (B, T), generator=g).to(device)
    if arch == "sct":
        model = AudioChatModel(ModelConfig(arch="sct", vocab_size=vocab, d_model=d, n_heads=H, n_kv_heads=H, n_layers=U,
                                           n_gen_layers=G, latent_dim=latent_dim)).to(device)
        layout = sct_layout(B, T, device)
        latents = torch.randn(B, T, latent_dim, generator=g).to(device)
        t = torch.where(layout.audio, torch.rand(B, T, generator=g).to(device), torch.zeros((), device=device))
        target = torch.randn(B, T, latent_dim, generator=g).to(device)
        next_text = torch.cat([layout.text[:, 1:], torch.zeros_like(layout.text[:, :1])], 1)
        labels = torch.where(next_text, torch.roll(tokens, -1, 1), torch.full_like(tokens, -100))
        layers = list(model.layers) + list(model.gen_layers)
        call = model
        if compile_mode == "layers":
            for l in layers: l.compile()
        elif compile_mode == "model": call = torch.compile(model)

        def loss_fn():
            out = call(tokens, latents, t, layout, flex=kernel == "flex")
            lm = F.cross_entropy(out.text_logits.flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
            diff = (out.audio_pred.float() - target).pow(2).mean(-1)[layout.audio].mean()
            return lm + 5 * diff
        n_layers = U + G
    else:
        model = Transformer(TransformerConfig(vocab_size=vocab, d_model=d, n_heads=H, n_kv_heads=H, n_layers=U + G)).to(device)
        labels = torch.roll(tokens, -1, 1); labels[:, -1] = -100
        layout = Layout.text_only(tokens)
        n_layers = U + G
        if kernel == "sdpa-causal":
            cos, sin = model.rotary(torch.arange(T, device=device)[None].expand(B, T))
            layer_fn = torch.compile(plain_causal_layer) if compile_mode == "layers" else plain_causal_layer

            def forward():
                x = model.embed_tokens(tokens)
                for l in model.layers: x = layer_fn(l, x, cos, sin)
                return model.lm_head(model.norm(x))
            call = torch.compile(forward) if compile_mode == "model" else forward
            logits_fn = call
        else:
            call = model
            if compile_mode == "layers":
                for l in model.layers: l.compile()
            elif compile_mode == "model": call = torch.compile(model)
            logits_fn = lambda: call(tokens, layout, flex=kernel == "flex")

        def loss_fn():
            return F.cross_entropy(logits_fn().flatten(0, 1).float(), labels.flatten(), ignore_index=-100)
    return model, loss_fn, n_layers


def count(model, arch: str) -> dict:
    total = sum(p.numel() for p in model.parameters())
    emb = model.embed_tokens.weight.numel()
    head = 0 if model.lm_head.weight is model.embed_tokens.weight else model.lm_head.weight.numel()
    layers = sum(p.numel() for m in [model.layers] + ([model.gen_layers] if arch == "sct" else []) for p in m.parameters())
    return dict(params_total=total, params_flops=total - emb, params_layers=layers, params_nonembedding=total - emb - head)


def measure_case(arch, kernel, compiled, size, shape, a, device, peak) -> dict:
    torch._dynamo.reset()
    free_memory()
    mode = a.compile_mode if compiled else "off"
    model, loss_fn, L = build_case(arch, kernel, shape, a.vocab, a.latent_dim, a.batch, a.length, device, mode)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    bf16 = device.type == "cuda"
    cuda = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    if cuda: torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(a.warmup): loss = step()
    if cuda: torch.cuda.synchronize()
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(a.steps): loss = step()
    if cuda: torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / a.steps
    n = count(model, arch)
    H, hd = model.layers[0].self_attn.n_heads, model.layers[0].self_attn.head_dim
    flops_token = 6 * n["params_flops"] + 12 * L * H * hd * a.length
    tps = a.batch * a.length / dt
    row = dict(size=size, arch="sct" if arch == "sct" else "plain", kernel=kernel, compile=mode, batch=a.batch, length=a.length,
               layers=L, d_model=shape[0], heads=H, **n, step_ms=round(1000 * dt, 2), tokens_per_s=round(tps),
               flops_per_token=flops_token, tflops_per_s=round(flops_token * tps / 1e12, 2),
               mfu=None if peak is None else round(flops_token * tps / peak, 4), warmup_s=round(warm, 1),
               loss=round(float(loss), 3), peak_memory_gb=round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if cuda else None)
    return row


def throughput(a, device, results: Results, deadline: float):
    from audiochat.model import transformer
    peak, how = peak_flops(device, a.peak_tflops)
    flex_ok = hasattr(transformer, "block_mask")
    try: import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError: flex_ok = False
    notes = [f"peak: {how}"]
    kernels = ["flex", "sdpa-mask"] if flex_ok else ["sdpa-mask"]
    if not flex_ok: notes.append("audiochat.model.transformer has no FlexAttention block mask here: only the SDPA boolean-mask path is measured")
    if device.type == "cpu" and "flex" in kernels:
        kernels.remove("flex"); notes.append("CPU: FlexAttention has no backward on the CPU, flex cases skipped")
    compiles = [c for c in ({"on": [True], "off": [False], "both": [True, False]}[a.compile])]
    if device.type == "cpu" and True in compiles and not a.cpu_compile:
        compiles = [c for c in compiles if not c] or [False]; notes.append("CPU: compile skipped (--cpu-compile to try it)")
    sizes = DRY_SIZES if a.dry else {s: SIZES[s] for s in a.sizes}
    # most informative first: compiled flex (the headline), then the anchors, then eager
    cases = []
    for compiled in compiles:
        for size in sizes:
            for arch, kernel in [("sct", "flex"), ("plain", "flex"), ("plain", "sdpa-causal"), ("sct", "sdpa-mask"), ("plain", "sdpa-mask")]:
                if kernel in kernels or kernel == "sdpa-causal":
                    cases.append((compiled, size, arch, kernel))
    results.stage("throughput", notes=notes, peak_tflops=None if peak is None else peak / 1e12, cases=len(cases))
    print("; ".join(notes))
    for compiled, size, arch, kernel in cases:
        key = dict(size=size, arch=arch, kernel=kernel, compile=a.compile_mode if compiled else "off")
        if time.time() > deadline:
            results.doc["throughput"].append(dict(**key, status="skipped", reason="throughput time budget spent")); results.write(); continue
        t0 = time.perf_counter()
        try:
            row = dict(status="ok", **measure_case(arch, kernel, compiled, size, sizes[size], a, device, peak))
            print(f"  {size:>5} {arch:<5} {kernel:<11} compile={key['compile']:<6} {row['tokens_per_s']:>10,} tok/s  "
                  f"MFU {'-' if row['mfu'] is None else format(100 * row['mfu'], '.1f') + '%'}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        except Exception as e:  # noqa: BLE001
            row = dict(**key, status="error", error=f"{type(e).__name__}: {str(e)[:1500]}", traceback=traceback.format_exc()[-3000:])
            print(f"  {size:>5} {arch:<5} {kernel:<11} compile={key['compile']:<6} FAILED {type(e).__name__}: {str(e)[:200]}", flush=True)
        finally:
            torch._dynamo.reset(); free_memory()
        results.doc["throughput"].append(row); add_ratios(results.doc["throughput"]); results.write()


def add_ratios(rows: list):
    "SCT / plain at equal size and compile: same kernel, and against the plain decoder's flash attention (sdpa-causal)."
    ok = {(r["size"], r["arch"], r["kernel"], r["compile"]): r for r in rows if r.get("status") == "ok"}
    for (size, arch, kernel, comp), r in ok.items():
        if arch != "sct": continue
        for name, ref in (("vs_plain_same_kernel", ok.get((size, "plain", kernel, comp))),
                          ("vs_plain_flash", ok.get((size, "plain", "sdpa-causal", comp)))):
            if ref is None: continue
            r[name] = dict(tokens_per_s=round(r["tokens_per_s"] / ref["tokens_per_s"], 3),
                           mfu=None if r["mfu"] is None else round(r["mfu"] / ref["mfu"], 3))


# ------------------------------------------------------------------------------------------------------------- e2e
def sh(cmd: list, timeout: float, env: dict | None = None, log: Path | None = None) -> subprocess.CompletedProcess:
    "Run a command (its output to `log` and the last lines on failure); raises on a non-zero exit or a timeout."
    print("$ " + " ".join(shlex.quote(str(c)) for c in cmd), flush=True)
    if timeout < 5: raise Skip(f"no time left for {' '.join(map(str, cmd[:4]))}")
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                         env={**os.environ, **(env or {})})
    if log is not None: log.write_text(res.stdout + "\n--- stderr\n" + res.stderr)
    if res.returncode:
        raise RuntimeError(f"exit {res.returncode}: {(res.stderr or res.stdout)[-1500:]}")
    return res


def audiochat_cmd(*args) -> list: return [sys.executable, "-m", "audiochat", *args]


def stage_data(a, work: Path, results: Results, left) -> dict:
    if a.data:
        data = Path(a.data)
        if not (data / "summary.json").exists(): raise FileNotFoundError(f"--data {data}: no summary.json (not a finished build)")
        out = dict(data=str(data), built=False)
    else:
        if shutil.which("espeak-ng") is None:
            raise RuntimeError("espeak-ng is missing (the dataset's speech tool): install it, or build the data on another "
                               "machine and pass --data DIR (and --eval-split DIR)")
        data = work / "data"
        preset, n = ("tiny", a.dialogues or 4) if a.dry else ("small", a.dialogues)
        args = ["data", "build", "--preset", preset, "--out", data, "--workers", a.workers]
        if n: args += ["--dialogues", n]
        if a.dry: args += ["--max-duration", 5, "--shard-size", 2]
        t0 = time.perf_counter(); sh(audiochat_cmd(*args), left() - 60, log=work / "data.log")
        seconds = time.perf_counter() - t0
        summary = json.loads((data / "summary.json").read_text())
        out = dict(data=str(data), built=True, preset=preset, workers=a.workers, seconds=round(seconds, 1),
                   dialogues=summary.get("dialogues", n), dialogues_per_s=round((summary.get("dialogues") or n or 0) / seconds, 2),
                   summary={k: v for k, v in summary.items() if isinstance(v, (int, float, str))})
    if a.eval_split: out["eval_split"] = a.eval_split
    else:
        split = work / "storygen-eval-mini"
        t0 = time.perf_counter()
        sh(audiochat_cmd("data", "eval", "--out", split, "--dialogues", 3 if a.dry else 60, "--workers", a.workers),
           left() - 60, log=work / "eval-split.log")
        out.update(eval_split=str(split), eval_split_seconds=round(time.perf_counter() - t0, 1))
    results.stage("data", **out)
    return out


def stage_codec(a, work: Path, data: dict, results: Results, device) -> dict:
    from audiochat.codec import codecs as C
    from audiochat.codec.training import train_codec
    if a.codec:
        return dict(codec=a.codec, trained=False)
    preset = "tiny"
    cfg = C.codec_preset("tiny") if hasattr(C, "codec_preset") else C.CodecConfig()
    if getattr(cfg, "kind", "vae") != "mel":
        preset = "vae-tiny" if a.dry else "small"
        cfg = C.codec_preset(preset)
    out_dir = work / "codec"
    shutil.rmtree(out_dir, ignore_errors=True)
    minutes = a.codec_minutes
    t0 = time.perf_counter()
    state = train_codec(cfg, data["data"], out_dir, steps=3 if a.dry else None, minutes=None if a.dry else minutes,
                          device=str(device), progress=False)
    info = dict(codec=str(out_dir), trained=True, preset=preset, kind=getattr(cfg, "kind", "vae"), steps=state["step"],
                seconds=round(time.perf_counter() - t0, 1), last=(state.get("history") or [None])[-1])
    results.stage("codec", **info)
    return info


def stage_encode(a, work: Path, data: dict, codec: dict, results: Results, device) -> dict:
    from audiochat.codec.codecs import Codec
    from audiochat.codec.latents import encode_folder
    model = Codec.from_pretrained(codec["codec"], device)
    cache = work / "latents"
    t0 = time.perf_counter()
    index = encode_folder(model, data["data"], cache, overwrite=True)
    seconds = time.perf_counter() - t0
    audio = sum(f["seconds"] for f in index["files"])
    info = dict(latents=str(cache), files=len(index["files"]), audio_seconds=round(audio, 1), seconds=round(seconds, 1),
                realtime=round(audio / max(seconds, 1e-9)), frame_dim=index["frame_dim"])
    results.stage("encode", **info)
    return info


def train_config(a, work: Path, data: dict, codec: dict, latents: dict, run: Path, steps: int, device, probe: bool = False):
    from audiochat.codec.codecs import CodecConfig
    from audiochat.core.checkpointing import latest_checkpoint
    from audiochat.runs.config import resolve
    folder = latest_checkpoint(codec["codec"]) or Path(codec["codec"])  # a codec run, or a saved codec
    ccfg = CodecConfig.from_dict(json.loads((folder / "config.json").read_text()))
    overrides = dict(
        data=dict(source=data["data"], codec=codec["codec"], latent_cache=latents["latents"]),
        codec=ccfg.to_dict(), model=dict(latent_dim=ccfg.frame_dim),
        optim=dict(steps=steps, warmup=min(200, max(1, steps // 10))),
        run=dict(out=str(run), progress=False, eval_every=0 if probe else max(steps, 1), save_every=0,
                 log_every=10 if probe else 50, device=str(device)))
    if a.dry: overrides["run"].update(compile=False, log_every=2); overrides["data"]["eval_dialogues"] = 1
    if device.type == "cpu": overrides["run"]["compile"] = False
    for item in a.train_set:  # --train-set model.d_model=256
        key, value = item.split("=", 1)
        node = overrides
        *path, leaf = key.split(".")
        for p in path: node = node.setdefault(p, {})
        import yaml
        node[leaf] = yaml.safe_load(value)
    return resolve("tiny" if a.dry else "small", overrides=overrides)


def count_model_parameters(model_config) -> int:
    from audiochat.model.sct import AudioChatModel
    with torch.device("meta"): return sum(p.numel() for p in AudioChatModel(model_config).parameters())


def stage_train(a, work: Path, data: dict, codec: dict, latents: dict, results: Results, device, left) -> dict:
    from audiochat.training.train import train
    run = work / "run"
    shutil.rmtree(run, ignore_errors=True)
    info = {}
    if a.dry: steps = a.train_steps or 6
    elif a.train_steps: steps = a.train_steps
    else:  # probe the step time (compile included once; the main run reuses the compile caches)
        probe = work / "run-probe"; shutil.rmtree(probe, ignore_errors=True)
        t0 = time.perf_counter()
        st = train(train_config(a, work, data, codec, latents, probe, 30, device, probe=True), overwrite=True)
        rows = [r for r in st["history"] if "seconds" in r]
        per_step = (rows[-1]["seconds"] - rows[-2]["seconds"]) / (rows[-1]["step"] - rows[-2]["step"])
        budget = min(a.train_minutes * 60, left() - a.reserve)
        if budget < 20: raise Skip(f"{budget:.0f} s left for training")
        steps = int(max(20, min(3000, budget / per_step)))
        info.update(probe_seconds=round(time.perf_counter() - t0, 1), probe_seconds_per_step=round(per_step, 4),
                    probe_tokens_per_s=rows[-1].get("tokens_per_s"))
        shutil.rmtree(probe, ignore_errors=True)
        results.stage("train", **info, planned_steps=steps)
    config = train_config(a, work, data, codec, latents, run, steps, device)
    t0 = time.perf_counter()
    st = train(config, overwrite=True)
    hist = st["history"]
    tail = hist[-3:]
    info.update(run=str(run), preset="tiny" if a.dry else "small", steps=st["step"], seconds=round(time.perf_counter() - t0, 1),
                train_seconds=round(st["seconds"], 1), compile=config.run.compile,
                params=count_model_parameters(config.model),
                first=hist[0] if hist else None, last=hist[-1] if hist else None,
                tokens_per_s=round(statistics.median(r["tokens_per_s"] for r in tail)) if tail else None,
                audio_seconds_per_s=round(statistics.median(r["audio_seconds_per_s"] for r in tail), 1) if tail else None,
                evals=st.get("evals", [])[-1:], bad_steps=st.get("bad_steps"))
    results.stage("train", **info)
    return info


def make_scorer(a, work: Path) -> tuple[str | None, str]:
    "(--scorer argument, description): the package's cached default scorer if present, else a quick one trained here."
    from audiochat.eval.evaluate import cache_dir
    if a.scorer not in ("auto", "default", "quick"): return a.scorer, f"given: {a.scorer}"
    default = cache_dir() / "tinyflam-150x1500"
    if a.scorer == "default" or (a.scorer == "auto" and (default / "model.safetensors").exists()):
        return None, "the package's default TinyFLAM (150 scenes x 1500 steps; trained now if not cached)"
    from audiochat.eval.scorer import scorer_examples, train_scorer
    examples, steps = (4, 10) if a.dry else (40, 400)
    scorer, _ = train_scorer(scorer_examples(range(examples)), steps=steps)
    d = work / f"scorer-{examples}x{steps}"
    scorer.save(d)
    return str(d), f"quick TinyFLAM trained here ({examples} scenes x {steps} steps): not comparable with the tables of docs/results.md"


def stage_scorer(a, work: Path, results: Results) -> dict:
    scorer, how = make_scorer(a, work)
    results.stage("scorer", scorer=scorer, how=how)
    return dict(scorer=scorer)


def stage_eval(a, work: Path, data: dict, train_info: dict, scorer: str | None, results: Results, left) -> dict:
    out = work / "eval"
    n = a.eval_dialogues or (1 if a.dry else 3)
    cmd = audiochat_cmd("eval", "--checkpoint", f"sct={train_info['run']}", "--baselines", a.eval_baselines,
                        "--split", data["eval_split"], "--dialogues", n, "--out", out, "--no-progress",
                        "--steps", 5 if a.dry else 25)
    if scorer: cmd += ["--scorer", scorer]
    t1 = time.perf_counter()
    sh(cmd, left() - a.reserve_chat, log=work / "eval.log")
    doc = json.loads((out / "results.json").read_text())
    info = dict(dialogues=n, seconds=round(time.perf_counter() - t1, 1), out=str(out), summary=doc.get("summary"),
                tables=(out / "tables.md").read_text()[:6000] if (out / "tables.md").exists() else None)
    results.stage("eval", **info)
    return info


def stage_learning(a, work: Path, data: dict, train_info: dict | None, scorer: str | None, results: Results, left) -> dict:
    script = ROOT / "benchmarks" / "learning.py"
    if not script.exists(): raise Skip("benchmarks/learning.py does not exist")
    if train_info is None: raise Skip("no trained run")
    runner = ("import sys, importlib.util as u; s = u.spec_from_file_location('learning', sys.argv[1]); "
              "m = u.module_from_spec(s); s.loader.exec_module(m); sys.exit(m.main(sys.argv[2:]) or 0)")
    out = work / "learning"
    out.mkdir(parents=True, exist_ok=True)
    if a.learning_args is not None: argv = shlex.split(a.learning_args)
    else:  # the options its --help lists, sized to the budget
        help_text = subprocess.run([sys.executable, "-c", runner, script, "--help"], capture_output=True, text=True,
                                   timeout=60, cwd=ROOT).stdout
        n = a.eval_dialogues or (1 if a.dry else 3)
        wanted = [("--run", train_info and train_info["run"]), ("--split", data.get("eval_split")), ("--dialogues", n),
                  ("--out", out / "learning.json"), ("--scorer", scorer), ("--threads", 1 if a.dry else (os.cpu_count() or 1)),
                  ("--steps", 3 if a.dry else None), ("--free-form-items", 1 if a.dry else 3), ("--max-tokens", 128 if a.dry else None),
                  ("--no-audio", a.dry),  # the dry run's few-step model writes near-empty audio
                  ("--quiet", True)]
        argv = []
        for flag, value in wanted:
            if value is None or value is False or flag not in help_text: continue
            argv += [flag] if value is True else [flag, str(value)]
        results.stage("learning", help=help_text[:3000])
    sh([sys.executable, "-c", runner, script, *argv], left() - a.reserve_chat, log=work / "learning.log")
    files = sorted(str(p) for p in out.rglob("*") if p.is_file()) if out.exists() else []
    log = (work / "learning.log").read_text()
    info = dict(argv=argv, files=files[:50], stdout_tail=log.split("\n--- stderr\n")[0][-3000:])
    for f in out.glob("*.json") if out.exists() else []:
        try: info.setdefault("json", {})[f.name] = json.loads(f.read_text())
        except (OSError, ValueError): pass
    results.stage("learning", **info)
    return info


# ------------------------------------------------------------------------------------------------------------ chat
def stage_chat(a, work: Path, train_info: dict | None, results: Results, device) -> dict:
    from audiochat.core.scene import Scene
    from audiochat.model.forcing import Turn
    from audiochat.model.grammar import decode_text
    from audiochat.serve.chat import ChatEngine
    from audiochat.serve.replies import Timings
    from audiochat.sim.data import DATA_SAMPLES
    from audiochat.training.train import train_tiny_run
    steps = 5 if a.dry else 25
    if train_info and (Path(train_info["run"]) / "checkpoints").exists():
        run, which = Path(train_info["run"]), "the e2e run"
    else:
        shape = [] if a.dry else ["--model.d_model=512", "--model.n_heads=8", "--model.n_kv_heads=4", "--model.n_layers=12",
                                  "--model.n_gen_layers=6", "--model.vocab_size=8192"]
        run = train_tiny_run(work / "chat-run", steps=2, overrides=shape + [f"--run.device={device}"])
        which = "a few-step model of the " + ("tiny" if a.dry else "small") + " shape (no e2e run): latency only"
    e = ChatEngine.load(run, device=device, steps=steps, cfg_scale=3.0)
    sync = (lambda: torch.cuda.synchronize()) if device.type == "cuda" else (lambda: None)
    prompt = "A 10-second story: a girl greets an old man while rain falls."
    ctx = e._context([Turn("user", prompt)])
    cot = {}
    for name, grammar in (("without_grammar", None), ("with_grammar", e.scene_grammar)):
        speeds = []
        for _ in range(1 if a.dry else 3):
            try: speeds.append(decode_text(e.model, *ctx, max_new_tokens=64 if a.dry else 256, grammar=grammar, pieces=e.pieces).tokens_per_s)
            except RuntimeError as err: cot[name + "_error"] = str(err)[:300]; break
        if speeds: cot[name] = round(statistics.median(speeds), 1)
    scene = Scene.from_json((DATA_SAMPLES / "demo" / "scene.json").read_text())
    scene = Scene(scene.sources, 10.0)
    text = scene.to_json()
    n_tokens = len(e.tokenizer.encode(text, add_special_tokens=False))
    rows = []
    for _ in range(1 if a.dry else 3):
        t = Timings(); sync()
        e.render([Turn("user", prompt)], scene, text, t); sync()
        rows.append(t)
    med = lambda f: statistics.median(f(r) for r in rows)
    speed = cot.get("with_grammar") or cot.get("without_grammar")
    info = dict(model=which, device=str(device), params=sum(p.numel() for p in e.model.parameters()),
                arch=e.model.config.arch, diffusion_steps=steps, cfg_scale=3.0, cot_tokens_per_s=cot,
                story_seconds=10.0, scene_tokens=n_tokens, cot_seconds=None if not speed else round(n_tokens / speed, 3),
                model_evaluations=rows[0].diffusion_steps, diffusion_seconds=round(med(lambda r: r.diffusion_seconds), 3),
                evaluations_per_s=round(med(lambda r: r.steps_per_s), 1), decode_seconds=round(med(lambda r: r.decode_seconds), 3))
    info["turn_seconds"] = round((info["cot_seconds"] or 0) + info["diffusion_seconds"] + info["decode_seconds"], 3)
    try:  # one real turn: the model's own CoT (may fail on a briefly trained model; the figures above do not depend on it)
        r = e.tell(prompt); info["tell"] = dict(ok=True, **{k: round(v, 3) if isinstance(v, float) else v for k, v in r.timings.to_dict().items()})
    except (ValueError, RuntimeError) as err: info["tell"] = dict(ok=False, error=f"{type(err).__name__}: {str(err)[:300]}")
    results.stage("chat", **info)
    return info


# ----------------------------------------------------------------------------------------------------------- table
def fmt(v, spec=""):
    return "-" if v is None else format(v, spec)


def print_table(doc: dict):
    print("\n" + "=" * 100)
    print(f"results: {doc['meta'].get('results')}   device: {doc['meta'].get('device')}   torch {doc['meta'].get('torch')}")
    rows = doc["throughput"]
    if rows:
        print("\nthroughput (training step, synthetic batch "
              f"{rows[0].get('batch', '?')} x {rows[0].get('length', '?')})")
        print("| size | model | kernel | compile | layer params | tokens/s | MFU | SCT/plain same kernel | SCT/plain flash | peak GB |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            if r.get("status") != "ok":
                print(f"| {r['size']} | {r['arch']} | {r['kernel']} | {r['compile']} | {r['status']}: {r.get('error', r.get('reason', ''))[:60]} |||||")
                continue
            same, flash = r.get("vs_plain_same_kernel") or {}, r.get("vs_plain_flash") or {}
            ratio = lambda d: "-" if not d else f"{d['tokens_per_s']:.2f}x" + ("" if d.get("mfu") is None else f" (MFU {d['mfu']:.2f}x)")
            print(f"| {r['size']} | {r['arch']} | {r['kernel']} | {r['compile']} | {r['params_layers'] / 1e6:.1f}M | "
                  f"{r['tokens_per_s']:,} | {fmt(None if r['mfu'] is None else 100 * r['mfu'], '.1f')}{'' if r['mfu'] is None else '%'} | "
                  f"{ratio(same) if r['arch'] == 'sct' else ''} | {ratio(flash) if r['arch'] == 'sct' else ''} | {fmt(r['peak_memory_gb'])} |")
    print("\nstages")
    print("| stage | status | seconds | figures |")
    print("|---|---|---|---|")
    for name, s in doc["stages"].items():
        figs = ""
        if s.get("status") == "error": figs = s.get("error", "")[:90]
        elif s.get("status") == "skipped": figs = s.get("reason", "")
        elif name == "data": figs = f"{s.get('dialogues', '-')} dialogues, {s.get('dialogues_per_s', '-')} /s with {s.get('workers', '-')} workers" if s.get("built") else f"given: {s.get('data')}"
        elif name == "codec": figs = f"{s.get('kind', '')} ({s.get('preset', 'given')}), {s.get('steps', '-')} steps"
        elif name == "encode": figs = f"{s.get('files')} files, {s.get('audio_seconds')} s of audio, {s.get('realtime')}x real time"
        elif name == "train":
            last = s.get("last") or {}
            figs = (f"{s.get('steps')} steps in {s.get('train_seconds')} s, {fmt(s.get('tokens_per_s'), ',')} tokens/s, "
                    f"loss {fmt(last.get('loss'), '.3f')} (lm {fmt(last.get('lm'), '.3f')}, diff {fmt(last.get('diff'), '.3f')})")
        elif name == "scorer": figs = str(s.get("how"))[:90]
        elif name == "eval": figs = f"{s.get('dialogues')} dialogues; tables in {s.get('out')}/tables.md"
        elif name == "learning": figs = f"{len(s.get('files', []))} files"
        elif name == "chat":
            figs = (f"CoT {s.get('cot_tokens_per_s')} tok/s; diffusion {s.get('model_evaluations')} evals in {s.get('diffusion_seconds')} s "
                    f"({s.get('evaluations_per_s')}/s); decode {s.get('decode_seconds')} s; turn {s.get('turn_seconds')} s")
        print(f"| {name} | {s.get('status')} | {s.get('seconds', '-')} | {figs} |")
    print("=" * 100, flush=True)


# ------------------------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=None, help="folder of results.json (default runs/gpu/, with --dry runs/gpu-dry/)")
    p.add_argument("--work", default=None, help="folder of the e2e artefacts (default OUT/work; with --dry a temporary folder)")
    p.add_argument("--dry", action="store_true", help="tiny CPU form of every stage (about a minute on one thread)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available; --dry: cpu)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    p.add_argument("--budget-minutes", type=float, default=9.0, help="wall time of the whole run; later stages shrink or skip")
    p.add_argument("--skip", nargs="*", default=[], choices=["throughput", "e2e", "eval", "learning", "chat"], help="stages to leave out")
    # throughput
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--compile", default="both", choices=["on", "off", "both"])
    p.add_argument("--compile-mode", default="layers", choices=["layers", "model"], help="regional (each layer) or the whole model")
    p.add_argument("--cpu-compile", action="store_true", help="also try torch.compile on the CPU")
    p.add_argument("--batch", type=int, default=None, help="sequences per step (default 16; --dry 2)")
    p.add_argument("--length", type=int, default=None, help="positions per sequence (default 1024; --dry 128)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per case (default 10; --dry 2)")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3; --dry 1)")
    p.add_argument("--vocab", type=int, default=8192); p.add_argument("--latent-dim", type=int, default=64)
    p.add_argument("--throughput-minutes", type=float, default=3.0, help="time budget of the throughput stage")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: looked up from the GPU's name)")
    # e2e
    p.add_argument("--data", default=None, help="a finished dataset folder to use instead of building one")
    p.add_argument("--eval-split", default=None, help="a built StoryGen-Eval-mini folder to use instead of building one")
    p.add_argument("--codec", default=None, help="a trained codec folder to use instead of training one")
    p.add_argument("--dialogues", type=int, default=None, help="dialogues to build (default 600 of the small preset; --dry 4)")
    p.add_argument("--workers", type=int, default=None, help="data build processes (default: all cores; --dry 1)")
    p.add_argument("--codec-minutes", type=float, default=0.75)
    p.add_argument("--train-minutes", type=float, default=1.5)
    p.add_argument("--train-steps", type=int, default=None, help="fixed optimiser steps instead of --train-minutes")
    p.add_argument("--train-set", nargs="*", default=[], help="config overrides of the e2e run, e.g. data.batch_size=8")
    p.add_argument("--eval-dialogues", type=int, default=None, help="StoryGen-Eval-mini dialogues (default 3; --dry 1)")
    p.add_argument("--eval-baselines", default="oracle,cascade")
    p.add_argument("--scorer", default="auto", help="auto (cached default, else quick), default, quick, or a TinyFLAM folder")
    p.add_argument("--learning-args", default=None, help="arguments of benchmarks/learning.py (default: from its --help)")
    p.add_argument("--reserve", type=float, default=150.0, help="seconds kept for eval and chat after training")
    p.add_argument("--reserve-chat", type=float, default=40.0, help="seconds kept for chat after eval")
    a = p.parse_args(argv)
    if a.dry:
        a.device = a.device or "cpu"
        a.batch, a.length, a.steps, a.warmup = a.batch or 2, a.length or 128, a.steps or 2, a.warmup or 1
        a.workers = a.workers or 1
        a.reserve, a.reserve_chat = 0.0, 0.0
        if a.eval_baselines == "oracle,cascade": a.eval_baselines = "oracle"
    a.batch, a.length, a.steps, a.warmup = a.batch or 16, a.length or 1024, a.steps or 10, 3 if a.warmup is None else a.warmup
    a.workers = a.workers or os.cpu_count() or 1
    if not a.dry and a.dialogues is None: a.dialogues = 600
    if a.threads: torch.set_num_threads(a.threads)
    device = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(a.out or ("runs/gpu-dry" if a.dry else "runs/gpu"))
    start = time.time()
    deadline = start + 60 * a.budget_minutes
    left = lambda: deadline - time.time()
    tmp = tempfile.TemporaryDirectory(prefix="audiochat-gpu-") if a.dry and a.work is None else None
    work = Path(tmp.name if tmp else (a.work or out / "work"))
    work.mkdir(parents=True, exist_ok=True)
    for name in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name): setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 64))
    meta = dict(results=str(out / "results.json"), argv=sys.argv[1:] if argv is None else list(argv), dry=a.dry, device=str(device),
                device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", torch=torch.__version__,
                cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), budget_minutes=a.budget_minutes,
                started=time.strftime("%Y-%m-%d %H:%M:%S"), work=str(work),
                flops_per_token="6 N + 12 L H d_head T (N: all parameters but the input token embedding)")
    try:
        import audiochat; meta["audiochat"] = audiochat.__version__
        meta["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except Exception: pass  # noqa: BLE001
    results = Results(out / "results.json", meta)
    print(f"device {meta['device_name']} ({device}), torch {torch.__version__}, {os.cpu_count()} cores, budget {a.budget_minutes:g} min, "
          f"results -> {results.path}", flush=True)
    try:
        if "throughput" not in a.skip:
            tp_deadline = time.time() + 60 * (a.throughput_minutes if not a.dry else 10)
            run_stage(results, "throughput", throughput, a, device, results, min(tp_deadline, deadline - (0 if a.dry else 300)))
        train_info = None
        if "e2e" not in a.skip:
            data = run_stage(results, "data", stage_data, a, work, results, left)
            codec = data and run_stage(results, "codec", stage_codec, a, work, data, results, device)
            latents = codec and run_stage(results, "encode", stage_encode, a, work, data, codec, results, device)
            train_info = latents and run_stage(results, "train", stage_train, a, work, data, codec, latents, results, device, left)
            scorer = train_info and run_stage(results, "scorer", stage_scorer, a, work, results)
            if scorer and "eval" not in a.skip:
                run_stage(results, "eval", stage_eval, a, work, data, train_info, scorer["scorer"], results, left)
            if scorer and "learning" not in a.skip:
                run_stage(results, "learning", stage_learning, a, work, data, train_info, scorer["scorer"], results, left)
            for name, value in (("data", data), ("codec", codec), ("encode", latents), ("train", train_info)):
                if value is None and name not in results.doc["stages"]: results.stage(name, status="skipped", reason="an earlier stage failed")
        if "chat" not in a.skip:
            run_stage(results, "chat", stage_chat, a, work, train_info, results, device)
    finally:
        results.doc["meta"]["seconds"] = round(time.time() - start, 1); results.write()
        print_table(results.doc)
        if tmp: tmp.cleanup()
    failed = [n for n, s in results.doc["stages"].items() if s.get("status") == "error"]
    failed += [f"throughput {r['size']} {r['arch']} {r['kernel']}" for r in results.doc["throughput"] if r.get("status") == "error"]
    print(f"wall time {time.time() - start:.0f} s; " + (f"failed: {', '.join(failed)}" if failed else "every stage ran"))
    return 1 if (failed and a.dry) else 0  # the dry run is a test; the GPU run records its failures and exits 0


if __name__ == "__main__":
    sys.exit(main())
