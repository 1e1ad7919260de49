"""Frame-level detection quality of the tiny FLAM-style scorer on the whole StoryGen-Eval-mini split.

Trains TinyFLAM as the metrics notebook does (150 rendered training scenes, 1,500 steps), then scores every sound
class on every frame of the split's 180 turns (60 dialogues: stories and edits) with the class caption and with the
held-out paraphrase. Prints AUROC and F1 (unbiased score > 1/2) and the time taken.
Run: OMP_NUM_THREADS=1 .venv/bin/python benchmarks/scorer.py
"""
import time

from audiochat.eval.metrics import detection_scores, eval_renders
from audiochat.eval.scorer import scorer_examples, train_scorer

t0 = time.time()
scorer, losses = train_scorer(scorer_examples(range(150)), steps=1500)
t1 = time.time()
renders = eval_renders(60)
t2 = time.time()
for name, phrase in (("captions", 0), ("held-out paraphrases", -1)):
    d = detection_scores(scorer, renders, phrase=phrase)
    print(f"{name:21s} AUROC {d['auroc']:.3f}  F1 {d['f1']:.3f}  (best F1 {d['best_f1']:.3f} at {d['best_threshold']:.2f}; "
          f"{d['frames']:,} frame-class pairs, {d['positives']:,} positive)")
print(f"train {t1 - t0:.0f} s, render {len(renders)} eval turns {t2 - t1:.0f} s, score {time.time() - t2:.0f} s")
