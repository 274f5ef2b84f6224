"""Monitored runs (recorded in the user's own loop by ``batchlab.monitor``): one section with
their settings, what the last measured update read, and the per-update curves.

They have no per-epoch evaluations (the loop is the user's), so they are kept out of the
groups of training runs, whose tables and learning curves are per epoch.
"""

from __future__ import annotations

import math

from batchlab.report import html as h
from batchlab.report.html import Section

ANCHOR = "monitored"
LAST = ("grad_norm", "update_norm", "dist_init", "noise_scale")  # the table's last measured values


def monitored_section(runs: list) -> list[Section]:
    """The section of the monitored ``runs`` (RunResults with ``monitored`` set); [] for none."""
    from batchlab.plots.monitored import monitored_figure
    from batchlab.report.figures import draw_svg
    from batchlab.store import series_frame

    if not runs:
        return []
    steps = series_frame(runs, "step")
    title = f"{len(runs)} run{'s' if len(runs) != 1 else ''} measured in their own training loop"
    rows = [_row(run) for run in runs]
    if not steps.empty:
        steps["label"] = [f"{name} · {rid[:8]}" for name, rid in zip(steps["name"], steps["run_id"])]
        caption = "Per update, as measured in the loop (gaps: updates not measured, or a noise scale withheld)"
        svg = draw_svg(lambda: monitored_figure(steps), f"{ANCHOR}-f0", caption)
        figures = h.figure(svg, caption, f"{ANCHOR}-curves")
    else:
        figures = '<p class="notice">No update was recorded yet.</p>'
    table = h.table(["run", "name", "model", "optimizer", "B", "lr", "status", "updates", "samples seen"]
                    + [f"last {q}" for q in LAST], rows,
                    caption="Settings as the loop gave them (— where not given); the last measured value of "
                            "each instrument", numeric=[False] * 7 + [True] * (2 + len(LAST)))
    body = (h.section_start(ANCHOR, "monitored runs", title)
            + '<p class="lead">Runs trained by the user\'s own loop and measured by '
              '<code>batchlab.monitor</code> (docs/monitor.md): no evaluations, one record per update.</p>'
            + table + "<h3>Figures</h3>" + figures + "</section>")
    card = f'<div class="card"><h4><a href="#{ANCHOR}">{h.esc(title)}</a></h4><p>{h.esc(_names(runs))}</p></div>'
    return [Section(ANCHOR, "monitored", title, body, card, 0 if steps.empty else 1)]


def _last(values) -> float:
    finite = [float(v) for v in values if math.isfinite(float(v))]
    return finite[-1] if finite else math.nan


def _row(run) -> list[str]:
    cfg, s = run.config, run.steps
    lr = cfg.optimizer.lr
    count = (lambda k: h.fmt_count(int(s[k][-1])) if len(s.get(k, ())) else "0")
    return ([run.run_id[:8], run.monitored.name, cfg.model.name, cfg.optimizer.name, f"{cfg.batch_size:,}",
             "—" if lr != lr else f"{lr:g}", run.status, count("step"), count("samples_seen")]
            + [h.fmt_num(_last(s[q]), 4) if q in s else "—" for q in LAST])


def _names(runs: list) -> str:
    names = sorted({run.monitored.name for run in runs})
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
