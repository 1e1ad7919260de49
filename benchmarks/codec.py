"""Codec benchmark: reconstruction figures of a preset after N minutes of training, and encode/decode real-time factors.

Training data: synthetic practice clips (espeak-ng speech, notes, noise, clicks) plus the sample dialogues in
data_samples/dialogues except the held-out ones; evaluation: the held-out dialogues and data_samples/demo.
Training is cumulative: `--minutes 5 10 20` trains 5 minutes, evaluates, resumes to 10, evaluates, and so on.

    .venv/bin/python benchmarks/codec.py --minutes 5 --threads 1
"""
import argparse
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import torch

from audiochat.codec.codecs import Codec, codec_preset
from audiochat.codec.training import (
    evaluate_codec,
    format_evaluation,
    list_audio_files,
    synthesize_audio_folder,
    train_codec,
)
from audiochat.sim.data import DATA_SAMPLES


def split_folders(work: Path, held_out: int) -> tuple[Path, Path]:
    "Copy the sample dialogues into train/ and eval/ folders: the last `held_out` dialogues (all their turns) are held out."
    train, test = work / "train", work / "eval"
    train.mkdir(parents=True); test.mkdir(parents=True)
    dialogue_dir = DATA_SAMPLES / "dialogues"
    files = list_audio_files(dialogue_dir) if dialogue_dir.exists() else []
    dialogue = lambda f: re.sub(r"-\d+$", "", f.stem)  # "train-999000004-2" -> "train-999000004" (one file per turn)
    ids = sorted({dialogue(f) for f in files})
    held = set(ids[len(ids) - held_out:]) if held_out else set()
    for f in files:
        shutil.copy(f, (test if dialogue(f) in held else train) / f.name)
    shutil.copy(DATA_SAMPLES / "demo" / "mix.wav", test / "demo-mix.wav")
    return train, test


def real_time_factors(model: Codec, seconds: float = 30.0, repeats: int = 3) -> tuple[float, float]:
    "Best-of-`repeats` encode and decode time per audio second on a `seconds`-long stereo clip."
    x = torch.randn(2, round(seconds * model.config.sample_rate)) * 0.1
    enc, dec = [], []
    with torch.inference_mode():
        for _ in range(repeats):
            t0 = time.perf_counter(); z = model.encode(x)
            t1 = time.perf_counter(); model.decode(z, length=x.shape[-1])
            t2 = time.perf_counter()
            enc.append((t1 - t0) / seconds); dec.append((t2 - t1) / seconds)
    return min(enc), min(dec)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--minutes", type=float, nargs="+", default=[5.0], help="cumulative training times to evaluate at")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--synthetic-files", type=int, default=48, help="4-second synthetic practice clips to add to training")
    p.add_argument("--held-out", type=int, default=2, help="sample dialogues held out for evaluation")
    p.add_argument("--out", default=None, help="keep the run here (default: a temporary folder)")
    p.add_argument("--json", default=None, help="also write the figures here")
    a = p.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    work = Path(a.out or tempfile.mkdtemp(prefix="codec-bench-"))
    train, test = split_folders(work / "data", a.held_out)
    synthesize_audio_folder(train / "synthetic", files=a.synthetic_files, seconds=4.0, seed=1)
    n_train = len(list_audio_files(train))
    print(f"codec benchmark: preset {a.preset}, torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)")
    print(f"train: {n_train} files under {train}; eval: {len(list_audio_files(test))} held-out files under {test}")
    config, run, rows = codec_preset(a.preset), work / "run", []
    for i, minutes in enumerate(sorted(a.minutes)):
        done = sum(r["train_minutes_this_run"] for r in rows)
        state = train_codec(config, train, run, minutes=minutes - done, resume=i > 0, progress=False, log_every=50)
        model = Codec.from_pretrained(run)
        result = evaluate_codec(model, test)
        enc, dec = real_time_factors(model)
        rows.append(dict(minutes=minutes, train_minutes_this_run=minutes - done, step=state["step"],
                         steps_per_second=state["step"] / state["seconds"], result=result, encode_rtf_30s=enc, decode_rtf_30s=dec))
        print(f"\n== after {minutes:g} min of training: {state['step']} steps ({state['step'] / state['seconds']:.2f} steps/s, "
              f"batch {config.batch_size} x {config.segment_seconds:g} s stereo) ==")
        print(format_evaluation(result))
        print(f"real-time factor on a 30 s stereo clip (best of 3): encode {enc:.4f}, decode {dec:.4f} "
              f"({1 / enc:.0f}x / {1 / dec:.0f}x faster than real time)")
    print("\nGPU training throughput: not measured (no GPU on this machine).")
    if a.json: Path(a.json).write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
