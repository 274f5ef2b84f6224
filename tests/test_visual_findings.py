"""Findings and notes write their formulas as the report's glossary does, in Unicode (‖θ − θ₀‖,
tr(Σ), |G|², √B, ±), not in ASCII (||theta - theta_0||, tr(Sigma), |G|^2, sqrt(B), +-). CSV
columns keep their ASCII names (theta_star_norm, lambda_max)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pandas as pd
import pytest

import batchlab

ANALYSIS = Path(batchlab.__file__).parent / "analysis"
# ASCII math as the findings wrote it; a column name such as "theta_star_norm" or "lambda_max" is no formula.
ASCII_MATH = re.compile(r"\|\|\s*[A-Za-z]|\btr\(Sigma\)|\+-|\bsqrt\(|\^2\b|\bTheta\b|\btheta_[0-9T(t]|\bB\^2| -> ")


def _shown_strings(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal of ``path`` that is not a docstring: the text
    findings, notes and reasons are made of (f-strings in their literal parts)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [(node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings]


@pytest.mark.parametrize("module", sorted(p.name for p in ANALYSIS.glob("*.py")))
def test_findings_and_notes_write_formulas_in_unicode(module):
    ascii_math = [(line, text) for line, text in _shown_strings(ANALYSIS / module) if ASCII_MATH.search(text)]
    assert ascii_math == []


def test_a_finding_as_the_user_reads_it():
    """The theory check of the gradient-norm study and the optimizer study's notes, computed."""
    from batchlab.analysis.gradient_norm import _theory
    from batchlab.analysis.optimizer import notes

    rows = pd.DataFrame({"batch_size": [1, 4, 16], "relative_error": [0.01, -0.02, 0.03],
                         "relative_low": [-0.05, -0.06, -0.04], "relative_high": [0.06, 0.04, 0.08],
                         "equivalent": ["agrees", "agrees", "inconclusive"], "trials": [200, 200, 200]})
    claim = _theory(rows, 1, "without", 0.1).claim
    assert "E‖g_B‖² matches the theory B²‖G‖² + B tr(Σ) (P − B)/(P − 1) within ±10%" in claim
    groups = pd.DataFrame({"optimizer": ["sgd", "adam"], "lr": [0.01, 0.001], "batch_size": [32, 32],
                           "dist_final": [2.0, 6.0], "initial_norm": [10.0, 10.0]})
    text = " ".join(notes({"groups": groups}, {"sgd_lrs": [0.01], "adam_lr": 0.001, "tolerance": 0.1}))
    assert "‖θ_T − θ₀‖" in text and "‖θ_T‖ / ‖θ₀‖" in text and "1 ± 0.1" in text
    assert not ASCII_MATH.search(text)
