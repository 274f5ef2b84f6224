"""An advice's section: the recommendation, the rule that chose it, its warnings, and the evidence
tables and figures from the advice's record (``batchlab advise`` stores them with it)."""

from __future__ import annotations

import pandas as pd

from batchlab.report import html as h
from batchlab.report.html import Section


def advice_section(name: str, record: dict) -> Section:
    rec = record.get("recommendation", {})
    tables = {k: pd.DataFrame(v) for k, v in record.get("tables", {}).items()}
    anchor = f"advice-{h.slug(name)}"
    settings = record.get("settings", {})
    title = f"{name}: batch size and lr for {settings.get('model')} on {settings.get('data')}"
    parts = [h.section_start(anchor, "advice", title)]
    parts.append(f'<p class="lead">Target {h.esc(rec.get("target"))} with {h.esc(rec.get("optimizer"))}; '
                 f'{h.fmt_seconds(record.get("seconds"))} of a {h.fmt_seconds(record.get("budget"))} budget.</p>')
    parts.append(_headline(rec))
    parts += [f'<p class="notice">Warning: {h.esc(w)}</p>' for w in rec.get("warnings", [])]
    if rec.get("cut"):
        parts.append(f'<p class="notice">Cut for the time budget: {h.esc("; ".join(rec["cut"]))}.</p>')
    parts.append(f'<p class="meta">Rule: {h.esc(rec.get("rule", ""))}.</p>')
    figures = _figures(anchor, rec, tables) if rec.get("reached") else []
    if "per_batch" in tables:
        parts.append("<h3>Each batch size at its best lr</h3>" + _per_batch(tables["per_batch"], rec))
    parts += figures
    if "rules" in tables and len(tables["rules"]):
        parts.append("<h3>What the lr rules predicted</h3>" + _rules(tables["rules"]))
    if "throughput" in tables:
        parts.append("<h3>Memory and throughput</h3>" + f'<p>{h.esc(rec.get("memory", ""))}</p>'
                     + _throughput(tables["throughput"]))
    if "closest" in tables and len(tables["closest"]):
        parts.append("<h3>Closest runs</h3>" + h.table(
            ["B", "lr", "seed", "best value", "epoch"],
            [[r.batch_size, h.fmt_num(r.lr), r.seed, h.fmt_num(r.best, 4), r.epoch] for r in tables["closest"].itertuples()],
            numeric=[True] * 5))
    parts.append("</section>")
    card = (f'<div class="card"><h4><a href="#{anchor}">{h.esc(name)}</a></h4><p>{h.esc(_short(rec))}</p></div>')
    return Section(anchor, "advice", title, "".join(parts), card, len(figures))


def _short(rec: dict) -> str:
    if not rec.get("reached"):
        return f"target {rec.get('target')} not reached within the budget"
    return f"B={rec['batch_size']}, lr={rec['lr']:.3g}, {rec['epochs']} epochs to {rec['target']}"


def _iv(d: dict | None, unit: str = "") -> str:
    if not d or d.get("value") is None:
        return "—"
    if d.get("low") is None:
        return h.fmt_num(d["value"], unit=unit)
    return f"{h.fmt_num(d['value'])} [{h.fmt_num(d['low'])}, {h.fmt_num(d['high'])}]" + (f" {unit}" if unit else "")


def _headline(rec: dict) -> str:
    if not rec.get("reached"):
        return '<p class="notice">No recommendation: no usable setting reached the target within the budget.</p>'
    crit, local, simple = rec.get("critical_batch") or {}, rec.get("local_critical_batch") or {}, rec.get("b_simple") or {}
    rows = [["recommended", f"B = {rec['batch_size']}, lr = {h.fmt_num(rec['lr'])}, {rec['epochs']} epochs"],
            ["updates to the target", _iv(rec.get("updates"))],
            ["epochs to the target", _iv(rec.get("epochs_to_target"))],
            ["seconds of training steps to the target", _iv(rec.get("wall_seconds"), "s")],
            ["regime at the recommended B", rec.get("regime") or "—"],
            ["fastest B / fewest samples B", f"{rec.get('fastest_batch')} / {rec.get('cheapest_batch')}"],
            ["critical batch B_crit (fitted)", _iv(crit) + (f" ({crit.get('method') or crit.get('why')})"
                                                             if crit.get("method") or crit.get("why") else "")],
            ["local critical batch (branching)", ("≥ " if local.get("censored") else "") + h.fmt_num(local.get("value"))
             + f" at epoch {local.get('epoch')}"],
            ["B_simple (exact, pilot)", h.fmt_num(simple.get("value")) + f" at epoch {simple.get('epoch')}"]]
    return h.table(["", "value (95% interval: " + str(rec.get("interval_method")) + ")"], rows)


def _per_batch(table: pd.DataFrame, rec: dict) -> str:
    rows = []
    for r in table.itertuples():
        mark = " (recommended)" if r.batch_size == rec.get("batch_size") else (" (Pareto)" if r.pareto else "")
        if pd.isna(r.lr):
            rows.append([f"{r.batch_size}", "—", "not reached", "", "", "", ""])
            continue
        rows.append([f"{r.batch_size}{mark}", h.fmt_num(r.lr),
                     _iv({"value": r.steps, "low": r.steps_low, "high": r.steps_high}),
                     _iv({"value": r.epochs, "low": r.epochs_low, "high": r.epochs_high}),
                     _iv({"value": r.seconds, "low": r.seconds_low, "high": r.seconds_high}),
                     getattr(r, "regime", "") or "", r.lr_edge or ""])
    return h.table(["B", "best lr", "updates", "epochs", "seconds", "regime", "lr at grid edge"], rows,
                   numeric=[False, True, True, True, True, False, False],
                   caption="Geometric means over seeds with 95% t-intervals on the log scale; seconds = updates x "
                           "the B's fitted seconds per update (one run alone on this device, compilation excluded).")


def _rules(rules: pd.DataFrame) -> str:
    names = [n for n in ("linear", "square_root", "noise_scale") if f"{n}_lr" in rules]
    rows = [[r["batch_size"], h.fmt_num(r["best_lr"]), f"({h.fmt_num(r['bracket_low'])}, {h.fmt_num(r['bracket_high'])})"]
            + [h.fmt_num(r[n + "_lr"]) + (" ✓" if r[n + "_holds"] else " ✗") for n in names]
            for r in rules.to_dict("records")]
    return h.table(["B", "best lr", "lies between"] + [n.replace("_", " ") + " rule" for n in names], rows,
                   numeric=[True, True, False] + [True] * len(names),
                   caption="Each rule's lr from the best lr at the base batch size (noise scale: McCandlish et al.'s "
                           "lr_max / (1 + B_noise / B)); ✓ when it falls between the best lr's neighbours in that "
                           "batch size's grid.")


def _throughput(table: pd.DataFrame) -> str:
    rows = [[r.batch_size, h.fmt_num(r.seconds_per_step * 1e3, unit="ms"),
             h.fmt_num(getattr(r, "seconds_per_step_fit", float("nan")) * 1e3, unit="ms"),
             h.fmt_count(r.samples_per_second), h.fmt_seconds(r.compile_seconds), h.fmt_count(r.peak_mib, "MiB"),
             "yes" if r.fits else "no"] for r in table.itertuples()]
    return h.table(["B", "per update (measured)", "per update (fit a + bB)", "samples / s", "compile", "peak memory",
                    "fits"], rows, numeric=[True] * 6 + [False])


def _figures(anchor: str, rec: dict, tables: dict) -> list[str]:
    from batchlab.plots.advice import noise_figure, scaling_figure
    from batchlab.report.figures import draw_svg

    crit = rec.get("critical_batch") or {}
    out = []
    table = tables["per_batch"].astype({"lr": float})
    for key in ("seconds", "samples", "steps"):
        for end in ("", "_low", "_high"):
            table[key + end] = table[key + end].astype(float)
    svg = draw_svg(lambda: scaling_figure(table, rec["batch_size"], float(crit.get("value") or "nan"),
                                          float(crit.get("s_min") or "nan"), rec["target"], "advice"),
                   f"{anchor}-scaling", "updates to the target and time against compute")
    out.append(h.figure(svg, "Updates to the target vs B with the fitted S(B); time against samples, Pareto front.",
                        f"{anchor}-scaling"))
    if "branches" in tables:
        svg = draw_svg(lambda: noise_figure(tables.get("noise", pd.DataFrame()), tables["branches"],
                                            rec.get("local_critical_batch") or {}, "noise evidence"),
                       f"{anchor}-noise", "noise scale and branches")
        out.append(h.figure(svg, "Exact B_simple over the pilot; the branches' losses and the local critical batch.",
                            f"{anchor}-noise"))
    return out
