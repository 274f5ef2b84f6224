"""A stored sweep's section: best lr per batch size, to-target with the B_crit fit, the lr x B
heatmap and the learning curves at each B's best lr.

The tables and figures come from the functions ``batchlab analyze`` uses
(``analysis/scaling.py``, ``plots/scaling.py``, ``plots/learning_curves.py``).
"""

from __future__ import annotations

from pathlib import Path

from batchlab.analysis.selection import RULE
from batchlab.report import html as h
from batchlab.report.concepts import SWEEP_CONCEPTS, concepts_html
from batchlab.report.html import Section


def sweep_section(name: str, spec: dict, run_ids: list[str], db: str | Path) -> Section:
    from batchlab.analysis.sweep import sweep_tables
    from batchlab.targets import parse_target
    from batchlab.report.curves import chart_data
    from batchlab.store import Store, series_frame, summary_frame

    anchor = f"sweep-{h.slug(name)}"
    with Store(db, create=False) as store:
        runs = store.load(run_ids, steps=False)
    header = h.section_start(anchor, "sweep", f"{name}: batch size x learning rate on {spec.get('data')} "
                                              f"({spec.get('model')})")
    lead = _lead(spec, len(run_ids), len(runs))
    if not runs:
        body = header + lead + '<p class="notice">No run of this sweep is stored yet (re-run the sweep).</p></section>'
        return Section(anchor, "sweep", name, body, _card(anchor, name, spec, None, 0), problems=["no runs"])

    goal = parse_target(spec["target"])
    history, summary = series_frame(runs, "epoch"), summary_frame(runs)
    settings, best, fit, at_best = sweep_tables(history, summary, goal)
    reached = best[best.lr.notna()]

    figures = _figures(anchor, goal, settings, best, fit, at_best)
    chart = h.chart(f"{anchor}-chart", f"sweep {name}: learning curves at each batch size's best lr",
                    chart_data(at_best, summary[summary.run_id.isin(at_best.run_id)], by=["batch_size", "lr"]))
    missing = len(run_ids) - len(runs)
    if missing:
        lead += (f'<p class="notice">{missing} run(s) of this sweep are not stored yet; '
                 "the tables use the stored ones.</p>")
    body = (header + lead + concepts_html(SWEEP_CONCEPTS, open_first=False)
            + "<h3>Best learning rate per batch size</h3>" + best_table(best, goal) + fit_html(fit, len(reached))
            + figures[0] + "<h3>Learning rate x batch size</h3>" + figures[1] + figures[2]
            + "<h3>Learning curves (interactive)</h3>" + chart + figures[3]
            + _settings_block(spec, runs) + "</section>")
    return Section(anchor, "sweep", name, body, _card(anchor, name, spec, fit, len(runs)), len(figures),
                   1 if chart else 0)


def _lead(spec: dict, planned: int, stored: int) -> str:
    lrs = f'{spec["lr_scaling"]} rule from {spec.get("base_lr")} at B={spec.get("base_batch")}' \
        if spec.get("lr_scaling") else spec.get("lr")
    return (f'<p class="lead">{planned:,} runs planned, {stored:,} stored · batch sizes '
            f'{h.esc(spec.get("batch_sizes"))} · learning rates {h.esc(lrs)}'
            f' · {h.esc(spec.get("seeds"))} seeds · budget {h.esc(spec.get("budget"))} · target '
            f'<code>{h.esc(spec.get("target"))}</code></p>')


def _figures(anchor: str, goal, settings, best, fit, at_best) -> list[str]:
    """The sweep's four figures, as <figure> markup: to target vs B, the lr x B heatmap, final
    metrics vs B and the learning curves at each B's best lr."""
    from batchlab.plots import learning_curves
    from batchlab.plots.scaling import final_metrics_figure, heatmap_figure, to_target_figure
    from batchlab.report.figures import draw_svg

    specs = [("to_target_vs_batch", f"Updates and samples to reach {goal} vs batch size, at each B's best lr",
              lambda: to_target_figure(best, fit, str(goal))),
             ("lr_batch_heatmap", "Final test accuracy (mean over seeds) for every learning rate x batch size",
              lambda: heatmap_figure(settings, best=best)),
             ("final_metrics_vs_batch", "Final test accuracy and generalization gap vs batch size, at each B's best lr",
              lambda: final_metrics_figure(best)),
             ("learning_curves_best_lr", "Learning curves at each batch size's best lr",
              lambda: learning_curves(at_best, "acc", title="Learning curves at each batch size's best lr"))]
    figures = []
    for k, (fig_name, caption, draw) in enumerate(specs):
        svg = draw_svg(draw, f"{anchor}-f{k}", caption)
        figures.append(h.figure(svg, caption, f"{anchor}-{h.slug(fig_name)}"))
    return figures


def _settings_block(spec: dict, runs: list) -> str:
    """The sweep's settings as given, then its runs' resolved settings, folded away."""
    from batchlab.report.runs import settings_details

    spec_rows = [(k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in spec.items()]
    return (f'<details class="settings"><summary>Resolved settings</summary>'
            f'{h.table(["sweep setting", "value"], spec_rows)}{settings_details(runs)}</details>')


def best_table(best, goal) -> str:
    """The best-lr-per-B table with units (updates, samples, seconds, %)."""
    def pm(row, key, fmt):
        value, std = row[key], row.get(f"{key}_std")
        if h.missing(value):
            return "never reached"
        return fmt(value) + ("" if h.missing(std) else f" ± {fmt(std)}")

    rows = []
    for row in best.to_dict("records"):
        rows.append([f"{int(row['batch_size']):,}", "none" if h.missing(row["lr"]) else f"{row['lr']:g}",
                     f"{row['reached']:.0%}",
                     pm(row, "steps", lambda v: h.fmt_count(v)), pm(row, "samples", lambda v: h.fmt_count(v)),
                     pm(row, "seconds", lambda v: f"{v:.2f}"), h.fmt_pct(row["test_acc"]), h.fmt_pct(row["gap_acc"]),
                     row.get("regime", "—") if isinstance(row.get("regime"), str) else "—"])
    headers = ["B", "best lr", "seeds reaching", "updates to target", "samples to target", "seconds to target",
               "final test acc", "gap (train − test)", "regime"]
    return h.table(headers, rows, numeric=[True] * 8 + [False], caption=(
        f"Target {goal}. {RULE[:1].upper() + RULE[1:]}; 'none' where no lr qualifies. Mean ± std over seeds."))


def fit_html(fit, reached: int) -> str:
    if fit is None:
        return (f'<p class="notice">Only {reached} batch size(s) have a best lr (every seed usable and ending at '
                "the target); the critical batch size fit needs 3 or more.</p>")
    def g(v):
        return h.fmt_num(v, 3) if abs(v) < 1000 else h.fmt_count(v)

    return (f"<p>Fit S(B) = S<sub>min</sub> (1 + B<sub>crit</sub>/B): S<sub>min</sub> = {g(fit.s_min)} ± "
            f"{g(fit.s_min_se)} updates, <b>B<sub>crit</sub> = {g(fit.b_crit)} ± {g(fit.b_crit_se)} samples</b>, "
            f"E<sub>min</sub> = {g(fit.e_min)} samples (± one standard error).</p>")


def _card(anchor, name, spec, fit, stored) -> str:
    crit = f"B_crit ≈ {fit.b_crit:,.0f}" if fit is not None else "no B_crit fit"
    return (f'<div class="card"><h4><a href="#{anchor}">sweep {h.esc(name)}</a></h4>'
            f'<p>{h.esc(spec.get("data"))} · {h.esc(spec.get("model"))} · B {h.esc(spec.get("batch_sizes"))}</p>'
            f'<p class="meta">{stored:,} runs stored · target {h.esc(spec.get("target"))} · {crit}</p></div>')
