"""What a reader sees in the report: an overview that says what the store holds, notes rendered
from their Markdown, a chart whose x axis shows every line, and a wide table that says it
scrolls. Built from made-up stores and pages (no training); the browser checks use headless
Chromium and are skipped without it."""

from __future__ import annotations

import html
import re

import pandas as pd
import pytest

from stores import made_up_runs
from test_report import browser  # noqa: F401 - the headless Chromium fixture of the report tests

from batchlab.store import Store
from batchlab.version import __version__


def _visible_text(page: str) -> str:
    """The page's words, without markup, figures or scripts."""
    page = re.sub(r"<(svg|script|style)\b.*?</\1>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def _store_of_studies(path, studies: int = 2, runs: int = 4) -> None:
    """A store whose runs all belong to (made-up, unregistered) studies: no sweep, no loose run."""
    made = made_up_runs(runs)
    with Store(path) as store:
        store.write(made, __version__)
        for k in range(studies):
            store.write_study(f"made-up-{k}", {"question": "Does it?", "settings": {},
                                               "groups": {"all": [r.run_id for r in made]},
                                               "findings": [{"claim": "it does", "source": "nobody",
                                                             "measured": "1 [0, 2]", "verdict": "agrees"}]})


# ---------------------------------------------------------------- item 1: the overview's counts

@pytest.mark.filterwarnings("ignore:report, made-up")  # unregistered studies: shown from their records
def test_overview_says_what_a_store_of_studies_holds(tmp_path):
    from batchlab.report import build_report

    _store_of_studies(tmp_path / "s.db")
    page = build_report(tmp_path / "s.db", tmp_path / "out").read_text(encoding="utf-8")
    overview = page[page.index("<h1>"):page.index('id="glossary"')]
    head = _visible_text(overview.split('<section id="study-')[0])
    assert "2 studies (4 runs)" in head, head
    assert not re.search(r"\bNone\b", head) and "0 sweeps" not in head and "0 groups" not in head, head
    assert "no sweeps and no plain training runs" in head, head
    assert "<h3>Sweeps</h3>" not in overview and "<h3>Training runs</h3>" not in overview


def test_overview_counts_every_kind_it_holds():
    from batchlab.report.build import _counts, _overview
    from batchlab.report.html import Section

    sections = [Section("a", "study", "a", "", "<div>a</div>"), Section("s", "sweep", "s", "", "<div>s</div>"),
                Section("r1", "runs", "r1", "", "<div>r1</div>"), Section("r2", "runs", "r2", "", "<div>r2</div>")]
    studies = {"a": {"groups": {"x": ["1", "2"], "y": ["2", "3"]}}}
    line = _visible_text(_counts(sections, studies, {"s": ({}, ["4", "5"])}, 7)).strip()
    assert line == "1 study (3 runs) · 1 sweep (2 runs) · 2 groups of training runs (7 runs)"
    assert _counts([], {}, {}, 0) == ""
    text = _visible_text(_overview(sections))
    assert "Studies" in text and "Sweeps" in text and "Training runs" in text and "This store holds no" not in text


# ---------------------------------------------------------------- item 2: notes rendered as HTML

def test_notes_markdown_becomes_a_table_and_a_list():
    from batchlab.analysis.lr_recovery import final_markdown
    from batchlab.report.markdown import markdown_html

    final = pd.DataFrame({"group": ["B=64, lr 0.01", "B=1024→64 after 10 ep"], "role": ["small", "switch"],
                          "updates": [460, 250], "seeds": [3, 3],
                          **{f"{k}{e}": [0.8, 0.7] for k in ("test_acc", "train_acc", "vs_small")
                             for e in ("", "_low", "_high")}})
    table = final_markdown(final)
    out = markdown_html(["A paragraph with ||theta|| and Theta*.", "- one\n- two", "- three", table])
    assert out.count("<table>") == 1 and "|---" not in out and "| group |" not in out
    assert out.count("<tr>") == 3 and "<th scope=\"col\">group</th>" in out
    assert re.search(r"<ul><li>one</li><li>two</li><li>three</li></ul>", out)
    assert "<p>A paragraph with ||theta|| and Theta*.</p>" in out  # formulas are not markup
    assert "<li>- " not in out and "<p>- " not in out


def test_a_studys_how_to_read_this_is_rendered(tmp_path, monkeypatch):
    """The section's notes block, as the report builds it, has no raw Markdown left."""
    import batchlab.report.studies as studies

    notes = ["Every run trains 20 epochs.", "- a bullet\n- another", "| a | b |\n|---|---|\n| 1 | 2 |"]

    def rebuild(shown, *args, **kwargs):
        shown.notes = notes

    monkeypatch.setattr(studies, "_rebuild", rebuild)
    section = studies.study_section("lr-recovery", {"groups": {"g": ["x"]}, "settings": {}}, tmp_path / "none.db")
    block = section.body.split("<h3>How to read this</h3>")[1].split("<h3>")[0]
    assert "<table>" in block and block.count("<li>") == 2 and "<p>Every run trains 20 epochs.</p>" in block
    assert "|---|" not in block and "- a bullet" not in block


# ---------------------------------------------------------------- in headless Chromium

def _page(tmp_path, body: str):
    from batchlab.report import html as h

    path = tmp_path / "page.html"
    path.write_text(h.page("check", body), encoding="utf-8")
    return path.as_uri()


CONVEX_LIKE = {"series": [  # SGD for 12 and 32 epochs beside full-batch GD for 1,000
    {"label": label, "runs": 2, "diverged": 0, "epoch": list(range(n + 1)), "step": [e * k for e in range(n + 1)],
     "samples_seen": [500 * e for e in range(n + 1)], "test_acc": [0.3 + 0.5 * (1 - 0.8 ** e) for e in range(n + 1)]}
    for label, n, k in (("B=1", 12, 500), ("B=16", 32, 32), ("B=500 (GD)", 1000, 1))]}

CHART = """JSON.stringify((() => {
  const svg = document.querySelector('#c .plot svg'), box = svg.querySelector('rect[fill=transparent]');
  const width = +box.getAttribute('width'), xs = {};
  svg.querySelectorAll('.series path').forEach(p => {
    const x = p.getAttribute('d').split(/[ML]/).filter(Boolean).map(s => +s.split(',')[0]);
    xs[p.getAttribute('data-series')] = (Math.max(...x) - Math.min(...x)) / width; });
  return {label: svg.querySelector('.xlabel').textContent, spans: xs,
          ticks: Array.from(svg.querySelectorAll('.axis text')).length};
})())"""


def test_a_chart_with_one_long_run_opens_on_a_log_x_axis(tmp_path, browser):
    """Lines ending at 12, 32 and 1,000 epochs: on a linear axis the two short ones took the
    first 1% and 3% of its width; each now spans a readable share of it."""
    import json

    from batchlab.report import html as h

    browser.open(_page(tmp_path, h.chart("c", "convex-like", CONVEX_LIKE)), 1280)
    assert browser.errors() == []
    drawn = json.loads(browser.js(CHART))
    assert "log scale" in drawn["label"], drawn
    assert min(drawn["spans"].values()) > 0.3, drawn
    browser.js("document.querySelector('#c input[value=step]').click()")  # updates end 1,000 to 6,000 apart:
    drawn = json.loads(browser.js(CHART))  # a linear axis reads fine there
    assert drawn["label"].startswith("updates") and "log" not in drawn["label"], drawn
    assert min(drawn["spans"].values()) > 0.15, drawn


# ---------------------------------------------------------------- item 8: a wide table says it scrolls

WIDE = """JSON.stringify(Array.from(document.querySelectorAll('.table-wrap')).map(w => ({
  scrolls: w.classList.contains('scrolls'), overflow: getComputedStyle(w).overflowX,
  hint: getComputedStyle(w, '::before').content, wider: w.scrollWidth > w.clientWidth,
  right: Math.round(w.getBoundingClientRect().right)})))"""


@pytest.mark.parametrize("width", [390, 1280])
def test_a_wide_table_scrolls_in_its_frame_and_says_so(tmp_path, browser, width):
    import json

    from batchlab.report import html as h

    wide = h.table([f"a long column heading {k}" for k in range(14)],
                   [[f"value number {k} of a row" for k in range(14)]] * 3, numeric=[True] * 14)
    narrow = h.table(["setting", "value"], [["lr", "0.1"]])
    browser.open(_page(tmp_path, wide + narrow), width, mobile=width < 600)
    assert browser.errors() == []
    tables = json.loads(browser.js(WIDE))
    assert tables[0]["wider"] and tables[0]["scrolls"] and tables[0]["overflow"] == "auto", tables
    assert "scroll" in tables[0]["hint"], tables
    assert tables[0]["right"] <= width
    assert not tables[1]["scrolls"] and tables[1]["hint"] in ("none", "normal"), tables
    assert browser.js("document.documentElement.scrollWidth") <= width  # the page itself does not scroll


def test_a_table_in_a_closed_details_is_measured_when_opened(tmp_path, browser):
    import json

    from batchlab.report import html as h

    wide = h.table([f"column {k} with a long name" for k in range(20)], [[f"value {k} of this row" for k in range(20)]])
    browser.open(_page(tmp_path, f"<details><summary>Resolved settings</summary>{wide}</details>"), 390, mobile=True)
    browser.js("document.querySelector('details').open = true")
    browser.js("new Promise(r => setTimeout(r, 100))")
    assert json.loads(browser.js(WIDE))[0]["scrolls"]
