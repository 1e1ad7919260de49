"""The paper's findings at teaching scale: every system trained with the same recipe, data, codec and step budget, then
evaluated on StoryGen-Eval-mini with the ground truth, the codec ceiling and the tool cascade.

Systems (docs/method.md section 8): SCT, Dense (Transfusion), MoT, DiT (no chain of thought), SCT without
chain of thought, SCT with one shared noise level, SCT with always-clean history. The headline rows (SCT, Dense, MoT,
DiT) are trained with several seeds; every figure is reported as mean and range over the seeds, and a verdict claims
an ordering only when the ranges do not overlap.

    python benchmarks/findings.py --scale demo   # the forcing claims at the `make demo` budget: about 3.5 hours on 2 cores
    python benchmarks/findings.py --scale full   # about 90 minutes on a 2-core CPU (make findings)
    python benchmarks/findings.py --scale small  # about 45 minutes: 200 steps per run, 4 evaluation dialogues
    python benchmarks/findings.py --scale tiny   # a few minutes: the same code path (make findings FINDINGS_SCALE=tiny)

`--data DIR --codec DIR` reuse a built data set and codec (e.g. `make demo`'s runs/pipeline/data and codec).
Training runs are cached under --out/runs/NAME-sSEED (a finished run is reused; a half-finished one resumes);
outputs: --out/findings.md (tables and verdicts), --out/findings.json, --out/curves.png (training curves of every run).

`--scale demo` is the scale where the forcing claims can show: every run trains for the `make demo` budget (1,000 steps
of the tiny recipe on make demo's data and codec; `runs/pipeline/model` is its SCT seed 0), every row has three seeds,
and every run is measured by the learning benchmark (benchmarks/learning.py: 20 StoryGen-Eval-mini dialogues, 40 edits,
exact edit diffs, editFLAM and the keep error, each also over the small edits alone). Each finished run and each
benchmark is cached, so the job can stop and go on later."""
import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from statistics import NormalDist

from audiochat.core.io import atomic_write

SYSTEMS = {  # name -> (role in the tables, training overrides)
    "sct": ("sct", []),
    "dense": ("dense", ["--model.arch=dense"]),
    "mot": ("mot", ["--model.arch=mot"]),
    "dit": ("dit", ["--model.arch=dit", "--data.cot=false"]),
    "no-cot": ("no-cot", ["--data.cot=false"]),
    "shared-noise": ("shared-noise", ["--loss.policy=shared"]),
    "clean-history": ("clean-history", ["--loss.policy=clean_history"]),
}
HEADLINE = ("sct", "dense", "mot", "dit")  # trained with every seed
SCALES = {  # steps per run, seeds of the headline rows, evaluation dialogues, diffusion steps
    "tiny": dict(steps=30, seeds=(0, 1), dialogues=1, diffusion_steps=4, data="tiny", codec_minutes=0.3),
    "small": dict(steps=200, seeds=(0, 1, 2), dialogues=4, diffusion_steps=10, data="demo", codec_minutes=2.0),
    "full": dict(steps=500, seeds=(0, 1, 2), dialogues=12, diffusion_steps=10, data="demo", codec_minutes=2.0),
}
CLAIMS = [  # (what the paper found, table, metric, better, system that should win, system it beats)
    ("SCT edits better than Dense (editFLAM)", "edit", "editflam", "higher", "sct", "dense"),
    ("SCT edits better than MoT (editFLAM)", "edit", "editflam", "higher", "sct", "mot"),
    ("SCT edits better than DiT (editFLAM; DiT copies its input)", "edit", "editflam", "higher", "sct", "dit"),
    ("SCT keeps the rest of the scene better than Dense (Delta-multiFLAM)", "edit", "delta_multiflam", "lower", "sct", "dense"),
    ("Forcing beats one shared noise level on edits (editFLAM)", "edit", "editflam", "higher", "sct", "shared-noise"),
    ("Forcing beats always-clean history on edits (editFLAM)", "edit", "editflam", "higher", "sct", "clean-history"),
    ("A chain of thought helps story generation (multiFLAM)", "story", "multiflam", "higher", "sct", "no-cot"),
    ("A chain of thought helps editing (editFLAM)", "edit", "editflam", "higher", "sct", "no-cot"),
    ("SCT understands better than Dense (tcpWER)", "understand", "tcpwer", "lower", "sct", "dense"),
]


def sh(args: list[str], log: Path | None = None):
    "Run a command (the venv's audiochat), fail loudly with its output."
    print("+", " ".join(args), flush=True)
    r = subprocess.run(args, capture_output=True, text=True)
    if log: log.write_text(r.stdout + r.stderr)
    if r.returncode: sys.exit(f"findings: command failed ({r.returncode}): {' '.join(args)}\n{r.stderr[-2000:]}")
    return r


def audiochat(*args) -> list[str]: return [str(Path(sys.executable).parent / "audiochat"), *args]


def prepare(out: Path, scale: dict, threads: int, data=None, codec=None) -> tuple[Path, Path]:
    "The shared data set and codec (built once, unless given)."
    if data and codec: return Path(data), Path(codec)
    data, codec = out / "data", out / "codec"
    if not (data / "summary.json").exists():
        sh(audiochat("data", "build", "--preset", scale["data"], "--out", str(data), "--workers", str(threads)))
    if not (codec / "done").exists():
        sh(audiochat("codec", "train", "--preset", "tiny", "--data", str(data), "--out", str(codec),
                     "--minutes", str(scale["codec_minutes"]), "--threads", str(threads), "--no-progress",
                     *(["--resume"] if (codec / "checkpoints" / "latest").exists() else [])))  # a killed build goes on
        (codec / "done").touch()
    return data, codec


def train_all(out: Path, data: Path, codec: Path, scale: dict, threads: int) -> dict:
    "Every system x seed, trained with the same recipe and budget; returns {run name: folder}."
    runs = {}
    for name, (_, extra) in SYSTEMS.items():
        for seed in (scale["seeds"] if name in HEADLINE else scale["seeds"][:1]):
            run = out / "runs" / f"{name}-s{seed}"
            if not (run / "done").exists():
                resume = ["--resume"] if (run / "checkpoints" / "latest").exists() else []
                sh(audiochat("train", "--preset", "tiny", f"--data.source={data}", f"--data.codec={codec}", f"--run.out={run}",
                             f"--optim.steps={scale['steps']}", f"--run.seed={seed}", f"--run.threads={threads}",
                             "--run.progress=false", *extra, *resume))
                (run / "done").touch()
            runs[f"{name}-s{seed}"] = run
    return runs


def evaluate_all(out: Path, runs: dict, scale: dict) -> dict:
    "One `audiochat eval` over every run, the ground truth, the codec ceiling and the cascade."
    ev = out / "eval"
    if not (ev / "results.json").exists():
        args = [f"--checkpoint={name}={run}" for name, run in runs.items()]
        sh(audiochat("eval", *args, "--baselines", "oracle,cascade", "--split", "storygen-eval-mini",
                     "--dialogues", str(scale["dialogues"]), "--steps", str(scale["diffusion_steps"]), "--out", str(ev),
                     "--no-progress"), out / "eval.log")
    return json.loads((ev / "results.json").read_text())


def figure(summary: dict, name: str, table: str, metric: str):
    d = summary.get(name, {})
    if not d.get("available", False) or table not in d: return None
    return d[table].get(metric)


def system_of(name: str) -> str:
    "The system a table row belongs to: `sct-s1` -> `sct`; other rows (oracle, cascade, codec ceiling) are their own."
    base = name.rsplit("-s", 1)[0]
    return base if base in SYSTEMS else name


def spread(summary: dict, system: str, table: str, metric: str) -> list[float]:
    "The figure of `system` for every seed it was trained with."
    vals = [figure(summary, n, table, metric) for n in summary if system_of(n) == system]
    return [v for v in vals if v is not None and math.isfinite(v)]


def fmt(vals: list[float], digits: int = 1) -> str:
    if not vals: return "-"
    m = sum(vals) / len(vals)
    return f"{m:.{digits}f}" if len(vals) == 1 else f"{m:.{digits}f} [{min(vals):.{digits}f}, {max(vals):.{digits}f}]"


def verdict(summary: dict, table, metric, better, a, b) -> tuple[str, str]:
    "reproduced as an ordering / not reproduced / not measurable, with the figures."
    va, vb = spread(summary, a, table, metric), spread(summary, b, table, metric)
    figures = f"{a} {fmt(va)} vs {b} {fmt(vb)}"
    if not va or not vb: return "not measurable at this scale", figures
    if better == "lower": va, vb = [-v for v in va], [-v for v in vb]  # then higher is better for both directions
    one_seed = " with one seed on a side: not established" if min(len(va), len(vb)) < 2 else ""
    if min(va) > max(vb): return ("the paper's ordering" + one_seed) if one_seed else "reproduced as an ordering", figures
    if max(va) < min(vb): return "not reproduced (the opposite ordering" + (one_seed and "; one seed") + ")", figures
    return "not reproduced (the seeds' ranges overlap)", figures


def curves(runs: dict, path: Path):
    "Training loss (L_LM and L_diff) of every run against the step, one figure."
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.5))
    for name, run in sorted(runs.items()):
        rows = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines()]
        rows = [r for r in rows if "lm" in r and "event" not in r]
        for a, key in zip(ax, ("lm", "diff")): a.plot([r["step"] for r in rows], [r[key] for r in rows], label=name, lw=1)
    for a, title in zip(ax, ("L_LM (text)", "L_diff (audio, v-MSE)")): a.set(title=title, xlabel="step", yscale="log")
    ax[1].legend(fontsize=6, ncol=2); fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)


# ---- the forcing claims at the `make demo` budget ---------------------------------------------------------------------

DEMO = dict(steps=1000, seeds=(0, 1, 2), dialogues=20, data="runs/pipeline/data", codec="runs/pipeline/codec",
            reuse={"sct-s0": "runs/pipeline/model"})  # make demo's model is the SCT run of seed 0 at this recipe
DEMO_SYSTEMS = {"sct": [], "shared-noise": ["--loss.policy=shared"], "clean-history": ["--loss.policy=clean_history"],
                "scene-form": ["--data.edit_form=scene"]}  # the last: an edit restates the whole scene (the paper's form)
DEMO_FIGURES = {  # name -> (path in learning.json, better)
    "exact edit diffs %": (("cot", "grammar_on", "edit", "exact_share"), "higher"),
    "editFLAM": (("audio", "systems", "model", "edit", "editflam"), "higher"),
    "editFLAM, small edits": (("audio", "systems", "model", "edit", "sizes", "small", "editflam"), "higher"),
    "keep error": (("audio", "systems", "model", "edit", "keep_error"), "lower"),
    "keep error, small edits": (("audio", "systems", "model", "edit", "sizes", "small", "keep_error"), "lower"),
    "Delta-multiFLAM": (("audio", "systems", "model", "edit", "delta_multiflam"), "lower"),
}
DEMO_CLAIMS = [  # (the paper's finding, figure, winner, loser, what the paper reports)
    ("Forcing beats one shared noise level on edits", "editFLAM", "sct", "shared-noise", "stated, no figure"),
    ("... and on small edits, next to what stays", "editFLAM, small edits", "sct", "shared-noise", "stated, no figure"),
    ("... and keeps what stays at small edits", "keep error, small edits", "sct", "shared-noise", "stated, no figure"),
    ("Forcing beats always-clean history on edits (clean history copies)", "editFLAM", "sct", "clean-history",
     "stated: collapses into copying"),
    ("... and on small edits, next to what stays", "editFLAM, small edits", "sct", "clean-history", "stated, no figure"),
    ("... and keeps what stays at small edits", "keep error, small edits", "sct", "clean-history", "stated, no figure"),
    ("The change alone is easier to learn than the whole scene restated", "exact edit diffs %", "sct", "scene-form",
     "not in the paper (it restates)"),
]
# seeds a side for a difference of means to show: a two-sided test at 5% with 80% power (the normal approximation)
POWER_Z = NormalDist().inv_cdf(0.975) + NormalDist().inv_cdf(0.80)


def seeds_needed(a: list[float], b: list[float]) -> int | None:
    """Seeds per side at which the difference of the means of `a` and `b` would be expected to show, from the spread
    measured: n = 2 (z * sd / gap)^2 with the seeds' pooled standard deviation (a two-sided test at 5% with 80%
    power). None with one seed a side (no spread) or equal means (no gap to find)."""
    if len(a) < 2 or len(b) < 2: return None
    var = lambda v: sum((x - sum(v) / len(v)) ** 2 for x in v) / (len(v) - 1)
    sd = math.sqrt((var(a) + var(b)) / 2)
    gap = abs(sum(a) / len(a) - sum(b) / len(b))
    if gap == 0: return None
    return max(2, math.ceil(2 * (POWER_Z * sd / gap) ** 2))


def demo_verdict(a: list[float], b: list[float], better: str) -> str:
    """Decided only when three seeds a side have ranges that do not overlap; otherwise the lean of the means and the
    seeds a side that would decide, from the spread measured (with fewer seeds: the same, marked as not yet decided)."""
    if not a or not b: return f"waiting for seeds ({len(a)} and {len(b)} of 3)"
    sign = 1 if better == "higher" else -1
    apart = min(sign * x for x in a) > max(sign * x for x in b) or max(sign * x for x in a) < min(sign * x for x in b)
    partial = len(a) < 3 or len(b) < 3
    if apart and not partial:
        return "reproduced (ranges apart)" if sign * (a[0] - b[0]) > 0 else "reversed (ranges apart)"
    lean = "the paper's way" if sign * (sum(a) / len(a) - sum(b) / len(b)) > 0 else "against the paper"
    n = seeds_needed(a, b)
    decide = (f"about {n:,} seeds a side would tell the means apart" if n else
              "equal means: no number of seeds tells them apart" if min(len(a), len(b)) > 1
              else "no spread yet from one seed")
    if partial:
        return (f"not decided yet ({len(a)} and {len(b)} of 3 seeds): ranges {'apart' if apart else 'overlap'} so far, "
                f"means lean {lean}; {decide}")
    return f"undecided: ranges overlap, means lean {lean}; {decide}"


RECORDS = Path(__file__).resolve().parents[1] / "docs" / "results" / "findings-demo"  # one committed record a run


def provenance(seconds: float) -> dict:
    "Where a record comes from: the code, the machine, the codec build (its weights' digest) and the time it took."
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    weights = next(iter(sorted(Path(DEMO["codec"]).glob("*.safetensors"))), None)
    return dict(commit=commit or None, date=time.strftime("%Y-%m-%d"), cores=os.cpu_count(),
                codec=hashlib.sha256(weights.read_bytes()).hexdigest()[:12] if weights else None,
                bench_seconds=round(seconds))


def training_curve(run: Path) -> list:
    """Every logged step of a run as [step, L_LM, L_diff] (the record's training curve). A resumed run logs the steps
    after its last checkpoint again: the last row of a step is the one that counts."""
    rows = [json.loads(l) for l in (run / "log.jsonl").read_text().splitlines() if l.strip()]
    last = {r["step"]: [r["step"], r["lm"], r.get("diff")] for r in rows if "lm" in r and "event" not in r}
    return [last[k] for k in sorted(last)]


def make_record(key: str, run: Path, learning: dict) -> dict:
    "The part of a run's learning benchmark that the tables and figures read, its training curve and its provenance."
    return dict(run=key, steps=DEMO["steps"], dialogues=learning["dialogues"],
                provenance=provenance(learning["seconds"]["total"]),
                cot=dict(grammar_on=dict(edit=dig(learning, ("cot", "grammar_on", "edit")))),
                audio=dict(systems={s: dict(edit=dig(learning, ("audio", "systems", s, "edit")))
                                    for s in ("model", "truth", "codec")}),
                curve=training_curve(run))


def write_record(key: str, record: dict) -> Path:
    "Written whole or not at all (`atomic_write`)."
    RECORDS.mkdir(parents=True, exist_ok=True)
    return atomic_write(RECORDS / f"{key}.json", lambda tmp: tmp.write_text(json.dumps(record, indent=1) + "\n"))


def run_demo(out: Path, systems: list[str], threads: int) -> dict:
    """Train (or reuse) every system x seed at the demo budget, benchmark each and commit its record under
    docs/results/findings-demo; a run whose record is there is not run again. Returns {run name: record}."""
    for seed in DEMO["seeds"]:  # seed by seed, so a partial job still compares the systems
        for name in systems:
            key = f"{name}-s{seed}"
            if (RECORDS / f"{key}.json").exists(): continue
            reuse = Path(DEMO["reuse"].get(key, out / "runs" / key))
            run = reuse if (reuse / "done").exists() else out / "runs" / key  # make demo's model, when it is there
            if not (run / "done").exists():
                resume = ["--resume"] if (run / "checkpoints" / "latest").exists() else []
                sh(audiochat("train", "--preset", "tiny", f"--data.source={DEMO['data']}", f"--data.codec={DEMO['codec']}",
                             f"--run.out={run}", f"--optim.steps={DEMO['steps']}", f"--run.seed={seed}",
                             f"--run.threads={threads}", "--run.progress=false", *DEMO_SYSTEMS[name], *resume), run.with_suffix(".log"))
                (run / "done").touch()
            bench = out / "bench" / f"{key}.json"
            if not bench.exists():
                bench.parent.mkdir(parents=True, exist_ok=True)
                sh([sys.executable, str(Path(__file__).with_name("learning.py")), "--run", str(run), "--dialogues",
                    str(DEMO["dialogues"]), "--free-form", "", "--held-out", "0", "--grammar", "on", "--no-understanding",
                    "--threads", str(threads), "--quiet",
                    "--out", str(bench)], bench.with_suffix(".log"))
            print("wrote", write_record(key, make_record(key, run, json.loads(bench.read_text()))), flush=True)
    return finished()


def finished() -> dict:
    "The committed records of the runs measured so far: {run name: record}."
    return {p.stem: json.loads(p.read_text()) for p in sorted(RECORDS.glob("*.json"))}


def demo_values(figures: dict, system: str, figure: str) -> list[float]:
    path, _ = DEMO_FIGURES[figure]
    vals = [dig(f, path) for k, f in figures.items() if k.rsplit("-s", 1)[0] == system]
    scale = 100 if figure.endswith("%") else 1
    return [scale * v for v in vals if v is not None and math.isfinite(v)]


def dig(d, path):
    for k in path:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def digits(figure: str) -> int: return 4 if figure.startswith("keep error") else 1


FIGURE = RECORDS.parents[1] / "figures" / "findings_demo.png"
SIZES = {"all edits": "", "small edits": ("sizes", "small"), "large edits": ("sizes", "large")}


def provenance_line(figures: dict) -> str:
    "How many machines, codec builds and code versions the records come from."
    prov = [f["provenance"] for f in figures.values()]
    kinds = lambda k: sorted({str(p.get(k)) for p in prov})
    minutes = sum(p.get("bench_seconds") or 0 for p in prov) / 60 / max(len(prov), 1)
    return (f"Records: {len(prov)} runs, measured {', '.join(kinds('date'))} on {', '.join(kinds('cores'))}-core "
            f"machines, code {', '.join(kinds('commit'))}, {len(kinds('codec'))} codec build(s) (make demo's codec "
            f"trains for 2 minutes, so each machine's build differs a little); a benchmark took {minutes:.0f} min on "
            "average.")


def demo_report(figures: dict, systems: list[str]) -> str:
    "The tables and verdicts of the records so far, written to docs/results/findings-demo.md (and .json)."
    first = next(iter(figures.values()), {})
    truth, codec = (dig(first, ("audio", "systems", s, "edit")) or {} for s in ("truth", "codec"))
    rows = ["# The forcing claims at the `make demo` budget", "",
            f"Every run: the tiny recipe, {DEMO['steps']} steps on make demo's data and codec, seeds {list(DEMO['seeds'])}; "
            f"the learning benchmark on {DEMO['dialogues']} StoryGen-Eval-mini dialogues ({2 * DEMO['dialogues']} edits; small "
            "edits: a few dB, a small pan or move, a short added sound). Figures: mean [min, max] over the seeds finished "
            f"(n). {len(figures)} runs benchmarked so far.", ""]
    if figures: rows += [provenance_line(figures), ""]
    rows += ["| system | n | " + " | ".join(DEMO_FIGURES) + " |", "|---|---|" + "---|" * len(DEMO_FIGURES)]
    for name in systems:
        n = sum(k.rsplit("-s", 1)[0] == name for k in figures)
        rows.append(f"| {name} | {n} | " + " | ".join(fmt(demo_values(figures, name, f), digits(f)) for f in DEMO_FIGURES) + " |")
    for label, ref in (("ground truth", truth), ("codec ceiling (first record)", codec)):
        if not ref: continue
        t = {"editFLAM": ref.get("editflam"), "editFLAM, small edits": dig(ref, ("sizes", "small", "editflam")),
             "keep error": ref.get("keep_error"), "keep error, small edits": dig(ref, ("sizes", "small", "keep_error")),
             "Delta-multiFLAM": ref.get("delta_multiflam")}
        rows.append(f"| {label} | - | - | " + " | ".join(fmt([t[f]] if t.get(f) is not None else [], digits(f))
                                                         for f in list(DEMO_FIGURES)[1:]) + " |")
    rows += ["", "## Verdicts", "", "| the paper's finding | figure | verdict | ours | the paper |", "|---|---|---|---|---|"]
    verdicts = []
    for claim, figure, a, b, paper in DEMO_CLAIMS:
        if a not in systems or b not in systems: continue
        va, vb = demo_values(figures, a, figure), demo_values(figures, b, figure)
        v = demo_verdict(va, vb, DEMO_FIGURES[figure][1])
        verdicts.append(dict(claim=claim, figure=figure, verdict=v, a=va, b=vb))
        rows.append(f"| {claim} | {figure} | {v} | {a} {fmt(va, digits(figure))} vs {b} {fmt(vb, digits(figure))} | {paper} |")
    rows += ["", "![training curves, editFLAM and keep error per system and edit size](../figures/findings_demo.png)", ""]
    summary = dict(scale=DEMO, figures={k: dig(f, ("audio", "systems", "model", "edit")) for k, f in figures.items()},
                   verdicts=verdicts)
    text = "\n".join(rows) + "\n"
    for suffix, body in ((".json", json.dumps(summary, indent=1, default=str) + "\n"), (".md", text)):
        atomic_write(RECORDS.with_suffix(suffix), lambda tmp: tmp.write_text(body))
    return text


def demo_figure(figures: dict, systems: list[str], path: Path) -> Path:
    """Left: every run's L_diff against the step, one colour a system. Middle and right: editFLAM and the keep error
    per system and edit size, one dot a seed, the bar the mean; the ground truth's level dashed."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colours = dict(zip(systems, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    fig, ax = plt.subplots(1, 3, figsize=(14, 3.8))
    for key, f in sorted(figures.items()):
        system = key.rsplit("-s", 1)[0]
        pts = [(s, d) for s, _, d in f["curve"] if d is not None]
        steps, diff = [p[0] for p in pts], [p[1] for p in pts]
        smooth = [sum(diff[max(0, i - 4):i + 1]) / len(diff[max(0, i - 4):i + 1]) for i in range(len(diff))]
        ax[0].plot(steps, smooth, lw=1, color=colours.get(system, "k"), label=system if key.endswith("-s0") else None)
    ax[0].set(title="L_diff (audio) while training, mean of 5 log rows", xlabel="step", yscale="log")
    ax[0].legend(fontsize=7)
    truth = dig(next(iter(figures.values())), ("audio", "systems", "truth", "edit"))
    width = 0.8 / max(len(systems), 1)
    for a, metric, title in ((ax[1], "editflam", "editFLAM (higher is better)"),
                             (ax[2], "keep_error", "keep error (lower is better)")):
        for i, (size, sub) in enumerate(SIZES.items()):
            for j, system in enumerate(systems):
                vals = [dig(f, ("audio", "systems", "model", "edit", *sub, metric)) for k, f in figures.items()
                        if k.rsplit("-s", 1)[0] == system]
                vals = [v for v in vals if v is not None]
                x = i + (j - (len(systems) - 1) / 2) * width
                if vals: a.bar(x, sum(vals) / len(vals), width * 0.9, color=colours[system], alpha=0.35)
                a.scatter([x] * len(vals), vals, s=10, color=colours[system], label=system if i == 0 else None)
            ref = dig(truth, (*sub, metric)) if truth else None
            if ref is not None: a.hlines(ref, i - 0.4, i + 0.4, colors="k", linestyles="dashed", lw=1)
        a.set_xticks(range(len(SIZES)), list(SIZES)); a.set_title(title)
    ax[2].set_yscale("log"); ax[1].legend(fontsize=7, title="dashed: ground truth", title_fontsize=7)
    fig.tight_layout(); path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100); plt.close(fig)
    return path


def report(out: Path, results: dict, runs: dict, scale: dict, seconds: float) -> str:
    summary = results["summary"]  # `audiochat eval`'s results.json: meta, summary, ...
    rows = ["# Findings at teaching scale", "",
            f"Every system: the tiny recipe, {scale['steps']} steps, the same data and codec; seeds {list(scale['seeds'])} for "
            f"{', '.join(HEADLINE)}; StoryGen-Eval-mini, {scale['dialogues']} dialogues, {scale['diffusion_steps']} diffusion "
            f"steps; {seconds / 60:.0f} minutes in all. Figures: mean [min, max] over seeds. KAD uses the project's scorer "
            "embeddings: not comparable with papers' KAD.", "",
            "| system | story multiFLAM | KAD | Delta-multiFLAM | editFLAM | tcpWER % |", "|---|---|---|---|---|---|"]
    names = list(dict.fromkeys(system_of(n) for n in summary))
    for n in names:
        cell = lambda t, m: fmt(spread(summary, n, t, m) if n in SYSTEMS else [v for v in [figure(summary, n, t, m)] if v is not None])
        rows.append(f"| {n} | {cell('story', 'multiflam')} | {cell('story', 'kad')} | {cell('edit', 'delta_multiflam')} | "
                    f"{cell('edit', 'editflam')} | {cell('understand', 'tcpwer')} |")
    rows += ["", "## Verdicts", "", "| the paper's finding | verdict | figures |", "|---|---|---|"]
    verdicts = []
    for claim, table, metric, better, a, b in CLAIMS:
        v, figures = verdict(summary, table, metric, better, a, b)
        verdicts.append(dict(claim=claim, verdict=v, figures=figures)); rows.append(f"| {claim} | {v} | {figures} |")
    lat = [figure(summary, n, "story", "latency") for n in summary if system_of(n) == "sct"]
    cas = figure(summary, "cascade", "story", "latency")
    if lat and cas: rows.append(f"| Latency: AudioChat vs the tool cascade (paper: 32 s vs 628 s) | measured | SCT {fmt([v for v in lat if v])} s vs cascade {cas:.2f} s per story (the offline tools are instant; the paper's cascade calls large models) |")
    rows += ["", "![training curves](curves.png)", ""]
    (out / "findings.json").write_text(json.dumps(dict(scale=scale, summary=summary, verdicts=verdicts), indent=1, default=str) + "\n")
    text = "\n".join(rows) + "\n"
    (out / "findings.md").write_text(text)
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=sorted(SCALES) + ["demo"], default="full")
    p.add_argument("--systems", default=None, help="--scale demo: the systems to run, comma-separated (default: all)")
    p.add_argument("--report-only", action="store_true", help="--scale demo: the tables of the benchmarks finished so far")
    p.add_argument("--out", default=None, help="output folder (default: runs/findings-SCALE)")
    p.add_argument("--data", default=None, help="a built data set to reuse (with --codec)")
    p.add_argument("--codec", default=None, help="a trained codec folder to reuse (with --data)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads and build workers (default: all cores)")
    a = p.parse_args(argv)
    out, t0 = Path(a.out or f"runs/findings-{a.scale}"), time.time()
    out.mkdir(parents=True, exist_ok=True)
    if a.scale == "demo":
        systems = a.systems.split(",") if a.systems else list(DEMO_SYSTEMS)
        if unknown := [s for s in systems if s not in DEMO_SYSTEMS]: p.error(f"--systems: unknown {unknown}; known: {list(DEMO_SYSTEMS)}")
        figures = finished() if a.report_only else run_demo(out, systems, a.threads)
        print(demo_report(figures, systems))
        if figures: demo_figure(figures, systems, FIGURE)
        print(f"wrote {RECORDS}.md, {RECORDS}.json" + (f", {FIGURE}" if figures else ""))
        return 0
    scale = SCALES[a.scale]
    if bool(a.data) != bool(a.codec): p.error("give both --data and --codec, or neither")
    data, codec = prepare(out, scale, a.threads, a.data, a.codec)
    runs = train_all(out, data, codec, scale, a.threads)
    results = evaluate_all(out, runs, scale)
    curves(runs, out / "curves.png")
    print(report(out, results, runs, scale, time.time() - t0))
    print(f"wrote {out / 'findings.md'}, {out / 'findings.json'}, {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
