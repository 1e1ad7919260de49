"""Agreement of the hand-written cpWER / tcpWER with MeetEval on random transcripts, and their speed.

usage: python benchmarks/tcpwer_parity.py [N_CASES] [SEED]
"""
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_metrics import random_case  # noqa: E402  (the generator the parity test uses)

from audiochat.eval.wer import cpwer, cpwer_from_scratch, tcpwer, tcpwer_from_scratch  # noqa: E402


def fields(r):
    return (r.errors, r.length, r.substitutions, r.insertions, r.deletions, r.assignment)


def main(n: int = 2000, seed: int = 0):
    rng = random.Random(seed)
    cases = [random_case(rng) for _ in range(n)]
    agree = dict(tcp_errors=0, tcp_all=0, cp_errors=0, cp_all=0)
    seconds = dict(tcp_scratch=0.0, tcp_meeteval=0.0, cp_scratch=0.0, cp_meeteval=0.0)
    constrained = 0  # cases where the time constraint changes the score
    words = sum(len(s["words"].split()) for ref, _, _ in cases for s in ref)
    for ref, hyp, collar in cases:
        scores = {}
        pairs = (("tcp", tcpwer_from_scratch, tcpwer, (ref, hyp, collar)), ("cp", cpwer_from_scratch, cpwer, (ref, hyp)))
        for name, ours, theirs, args in pairs:
            t0 = time.perf_counter()
            a = ours(*args)
            t1 = time.perf_counter()
            b = theirs(*args)
            seconds[f"{name}_scratch"] += t1 - t0
            seconds[f"{name}_meeteval"] += time.perf_counter() - t1
            agree[f"{name}_errors"] += (a.errors, a.length) == (b.errors, b.length)
            agree[f"{name}_all"] += fields(a) == fields(b)
            scores[name] = a.errors
        constrained += scores["tcp"] != scores["cp"]
    print(f"{n} random cases (seed {seed}), {words} reference words in all")
    print(f"  tcpWER differs from cpWER (the time constraint matters) in {constrained}/{n}")
    for k, v in agree.items():
        print(f"  {k:>10}: {v}/{n} agree with MeetEval")
    for k, v in seconds.items():
        print(f"  {k:>13}: {1000 * v / n:.2f} ms per case")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
