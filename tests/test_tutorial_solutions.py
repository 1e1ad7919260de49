"""The hidden solutions of tutorials/exercises.ipynb agree with the package, and the checks catch wrong answers."""
import importlib.util
from pathlib import Path

import pytest
import torch

_spec = importlib.util.spec_from_file_location("tutorial_solutions", Path(__file__).parent.parent / "tutorials" / "solutions.py")
solutions = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(solutions)


def _todo(*args): raise NotImplementedError


def test_solutions_match_the_package():
    solutions.check_all()


def test_unimplemented_stubs_fall_back_to_the_solutions(capsys):
    solutions.check_span_mask(_todo); solutions.check_v_target(_todo, _todo); solutions.check_dpmpp_2m(_todo); solutions.check_tcpwer(_todo)
    assert capsys.readouterr().out.count("hidden solution") == 5


def test_checks_reject_wrong_answers():
    with pytest.raises(AssertionError, match="build_mask"):
        solutions.check_span_mask(lambda span: torch.ones(len(span), len(span), dtype=torch.bool).tril())  # causal only
    with pytest.raises(AssertionError):
        solutions.check_v_target(lambda x0, eps, t: solutions.v_target(x0, eps, t)[::-1])  # x_t and v swapped
    with pytest.raises(AssertionError, match="differs from audiochat.model.diffusion.sample"):  # first order only
        solutions.check_dpmpp_2m(lambda x, x0, prev, s, sn, sp: solutions.dpmpp_2m_step(x, x0, None, s, sn, sp))
    with pytest.raises(AssertionError, match="MeetEval counts 3 in 6"):
        solutions.check_tcpwer(lambda: (2, 6))
