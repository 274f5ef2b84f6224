"""Groups of plain ``train`` runs (in no study or sweep): learning curves and a summary table.

Runs form a group when they share data, model and optimizer (every ``data.*``, ``model.*``
setting and the optimizer's name); batch size, learning rate, momentum, epochs and seeds may
differ inside a group, and each distinct setting is one line of its chart and one row of its
table (seeds averaged).
"""

from __future__ import annotations

import pandas as pd

from batchlab.analysis.curves import SETTINGS, group_columns, group_label
from batchlab.config import SEED_SETTINGS
from batchlab.report import html as h
from batchlab.report.html import Section

GROUP_PREFIXES = ("data", "model")


def group_key_columns(summary: pd.DataFrame) -> list[str]:
    """The columns that define a group of train runs: data, model and optimizer."""
    return [c for c in summary.columns if c.split(".")[0] in GROUP_PREFIXES or c == "optimizer"]


def group_title(row: dict) -> str:
    hidden = row.get("model.hidden")
    model = f"{row['model']} ({hidden})" if row.get("model") == "mlp" and hidden else str(row.get("model"))
    return f"{row.get('data')} · {model} · {row.get('optimizer')}"


_WORDS = {"acc": "accuracy", "r2": "R²", "loss": "loss"}


def runs_sections(runs: list, start: int = 0) -> list:
    """One :class:`~batchlab.report.studies.Section` per group of ``runs`` (RunResults)."""
    from batchlab.plots import learning_curves
    from batchlab.report.curves import chart_data
    from batchlab.report.figures import draw_svg
    from batchlab.store import series_frame, summary_frame

    if not runs:
        return []
    summary = summary_frame(runs)
    keys = group_key_columns(summary)
    summary["_group"] = [repr(tuple(row)) for row in summary[keys].itertuples(index=False)]
    sections = []
    for k, (_, members) in enumerate(summary.groupby("_group", sort=False), start=start):
        ids = set(members.run_id)
        chosen = [r for r in runs if r.run_id in ids]
        history = series_frame(chosen, "epoch")
        members = members.drop(columns="_group")
        title = group_title(members.iloc[0].to_dict())
        anchor = f"runs-{k + 1}"
        by = group_columns(members)
        figures = []
        score = "r2" if "test_r2" in history and history["test_r2"].notna().any() else "acc"
        for j, metric in enumerate((score, "loss")):
            caption = f"{title}: {_WORDS[metric]} vs epoch, per setting"
            svg = draw_svg(lambda metric=metric: learning_curves(history, metric, by=by, title=caption),
                           f"{anchor}-f{j}", caption)
            figures.append(h.figure(svg, caption, f"{anchor}-{metric}"))
        chart = h.chart(f"{anchor}-chart", f"{title}: learning curves", chart_data(history, members, by=by))
        body = (h.section_start(anchor, "training runs", title) +
                f'<p class="lead">{len(members)} run{"s" if len(members) != 1 else ""} trained with '
                f'<code>batchlab train</code> (in no study or sweep); {h.esc(_describe(members, by))}.</p>'
                + summary_table(members, by) + "<h3>Learning curves (interactive)</h3>" + chart
                + "<h3>Figures</h3>" + "".join(figures)
                + f'<details class="settings"><summary>Resolved settings</summary>{settings_details(chosen)}</details>'
                + "</section>")
        card = (f'<div class="card"><h4><a href="#{anchor}">{h.esc(title)}</a></h4>'
                f'<p>{len(members)} run{"s" if len(members) != 1 else ""}; {h.esc(_describe(members, by))}</p></div>')
        sections.append(Section(anchor, "runs", title, body, card, len(figures), 1 if chart else 0))
    return sections


def summary_table(summary: pd.DataFrame, by: list[str]) -> str:
    """Per setting: seeds, status, final accuracies and losses (mean over seeds), budget and time."""
    rows = []
    for _, g in summary.groupby(by, sort=True, dropna=False):
        first = g.iloc[0]
        status = ", ".join(f"{n} {s}" for s, n in g.status.value_counts().sort_index().items())
        diverged = g.diverged_step.dropna() if "diverged_step" in g else []
        if len(diverged):
            status += " (at update " + ", ".join(f"{int(v):,}" for v in sorted(diverged)) + ")"
        score = "r2" if "test_r2" in g and g.test_r2.notna().any() else "acc"
        fmt = h.fmt_pct if score == "acc" else (lambda v: h.fmt_num(v, 3))
        train, test = g[f"train_{score}"], g[f"test_{score}"]
        fits = g.diagnosis.value_counts(sort=False) if "diagnosis" in g else pd.Series(dtype=int)
        fit = ", ".join(f"{label} ({n})" if len(fits) > 1 else label for label, n in fits.items())
        rows.append([group_label(first, by), len(g), status, fit, fmt(train.mean()), fmt(test.mean()),
                     fmt((train - test).mean()), h.fmt_num(g.train_loss.mean(), 3),
                     h.fmt_num(g.test_loss.mean(), 3), h.fmt_count(g.epochs_done.mean()),
                     h.fmt_count(g.steps.mean(), "updates"), h.fmt_count(g.samples_seen.mean(), "samples"),
                     h.fmt_seconds(g.train_seconds.mean())])
    headers = ["setting", "seeds", "status", "learning curves say", "train acc (R² for regressions)", "test acc (R²)", "gap (train − test)",
               "train loss",
               "test loss", "epochs", "updates", "samples seen", "train time"]
    return h.table(headers, rows, caption="Final values after the last epoch, mean over seeds; what the learning "
                                          "curves say: docs/diagnosis.md",
                   numeric=[False, True, False, False] + [True] * 9)


def settings_details(runs: list) -> str:
    """The resolved settings of ``runs``: those shared by all, then those that differ."""
    from batchlab.store import summary_frame

    frame = summary_frame(runs)
    columns = [c for c in SETTINGS if c in frame]
    values = {c: sorted({_value(v) for v in frame[c]}, key=_sort_key) for c in columns}
    shared = [(c, values[c][0]) for c in columns if len(values[c]) == 1]
    varying = [(c, ", ".join(values[c])) for c in columns if len(values[c]) > 1]
    seeds = [(c, ", ".join(sorted({_value(v) for v in frame[c]}, key=_sort_key))) for c in SEED_SETTINGS if c in frame]
    out = h.table(["setting", "value"], shared, caption=f"Shared by all {len(frame)} runs")
    if varying:
        out += h.table(["setting", "values"], varying, caption="Differ between runs")
    out += h.table(["seed", "values"], seeds, caption="Seeds")
    return out


def _value(v) -> str:
    if v is None or (isinstance(v, float) and v != v) or v == "":
        return "—"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _sort_key(text: str):
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def _describe(members: pd.DataFrame, by: list[str]) -> str:
    settings = members[by].drop_duplicates()
    if len(settings) == 1:
        return "one setting, " + group_label(settings.iloc[0], by)
    return f"{len(settings)} settings differing in {', '.join(_name(c) for c in by)}"


def _name(column: str) -> str:
    return {"batch_size": "batch size", "lr": "learning rate"}.get(column, column)
