"""A quick-size study never poses as a faithful one: the label is in the terminal, on every
finding of findings.md, on every verdict badge and overview card of the report, and on its
figures; and studies sharing an output folder never overwrite each other's files."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from batchlab.analysis.findings import QUICK_LABEL, Finding
from batchlab.errors import BatchlabError
from batchlab.plots.memo import figure_key
from batchlab.report.studies import _card, findings_html
from batchlab.studies import get_study
from batchlab.studies.base import FigureSpec
from batchlab.studies.outputs import draw_study_figure, findings_markdown
from batchlab.studies.runner import StudyResult, run_study

FINDINGS = [Finding("a claim", "a source", "1 [0, 2]", "agrees"),
            Finding("another claim", "a source", "3 (no interval: one seed)", "inconclusive", "one seed")]


def test_findings_md_marks_every_finding_and_says_why_one_is_not_decided():
    study = get_study("convex")
    text = findings_markdown(study, study.settings(quick=True), FINDINGS, [], True, [])
    lines = [line for line in text.splitlines() if line.startswith("- **")]
    assert len(lines) == 2 and all(QUICK_LABEL in line for line in lines)
    assert "Not decided: one seed." in lines[1]
    assert QUICK_LABEL not in findings_markdown(study, study.settings(), FINDINGS, [], False, [])


def test_the_terminal_summary_says_quick(capsys):
    from batchlab.cli.studies import _print_study

    result = StudyResult("convex", {}, {}, FINDINGS, [], ["r1"], 1.0, quick=True)
    _print_study(result)
    out = " ".join(capsys.readouterr().out.split())  # lines wrapped to 80 columns
    assert out.split(" - **")[0].endswith(f"{QUICK_LABEL})") and out.count(QUICK_LABEL) == 3


def test_report_badges_and_overview_cards_say_quick():
    findings = [f.to_dict() for f in FINDINGS]
    assert findings_html(findings, quick=True).count(QUICK_LABEL) == 2
    assert QUICK_LABEL not in findings_html(findings)
    assert QUICK_LABEL in _card("a", "convex", "?", findings, quick=True)
    assert "Not decided: one seed." in findings_html(findings)


@pytest.mark.parametrize("layout", [None, "constrained"])
def test_figures_carry_the_label_above_an_unchanged_drawing(layout):
    fig, ax = plt.subplots(figsize=(6, 3), layout=layout)
    ax.plot([1, 2], [3, 4])
    fig.suptitle("A title")
    if layout is None:
        fig.tight_layout()
    inches = ax.get_position().height * fig.get_size_inches()[1]
    spec = FigureSpec("f", lambda tables, s: fig, "t")
    drawn = draw_study_figure(spec, {}, {}, quick=True)
    texts = [t.get_text() for t in drawn.texts] + [drawn.get_suptitle()]
    assert any(QUICK_LABEL.upper() in t for t in texts)
    if layout is None:  # the axes kept their size in inches; the figure grew by the label's band
        assert ax.get_position().height * drawn.get_size_inches()[1] == pytest.approx(inches)
    plt.close(fig)


def test_a_quick_figure_is_not_recalled_as_a_faithful_one():
    tables = {"t": pd.DataFrame({"x": np.arange(3.0)})}
    assert figure_key("s", "f", tables, {"a": 1}, True) != figure_key("s", "f", tables, {"a": 1}, False)


def test_a_second_study_does_not_overwrite_the_first_ones_folder(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "findings.md").write_text("# brownlee: Does batch size control the stability of training?\n")
    with pytest.raises(BatchlabError, match="already holds the files of study 'brownlee'"):
        run_study(get_study("convex"), quick=True, db=tmp_path / "s.db", out=out)
    assert (out / "findings.md").read_text().startswith("# brownlee")
    assert not (tmp_path / "s.db").exists() or not any(out.glob("*.csv"))
