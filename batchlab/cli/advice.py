"""The ``advise`` command: which batch size, lr and epochs for your model, with the evidence
(``batchlab/advise/``; the rule that decides is ``analysis/advice.py``'s)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer

from batchlab.cli import DEFAULT_DB, app, console, expect_interrupts, say
from batchlab.cli.options import settings_options
from batchlab.settings import TRAINING

# What advise chooses or does not use: the rest of the training settings stay the user's to fix.
NOT_OPTIONS = {"batch_size", "lr", "epochs", "seeds", "phases", "micro_batch", "instruments", "patience", "monitor",
               "min_delta", "restore_best", "devices"}


@app.command()
@settings_options([s for s in TRAINING if s.name not in NOT_OPTIONS], defaults={"data": "digits"})
def advise(
    given: dict,
    target: str = typer.Option(..., help="what counts as reached, e.g. test_acc>=0.9 or train_loss<=0.1"),
    budget: str = typer.Option("10m", help="time for the whole advice: 90s, 10m, 1h"),
    max_batch: Optional[str] = typer.Option(None, "--max-batch", help="largest batch size to consider"),
    prefer: str = typer.Option("balanced", help="balanced (updates x samples: near B_crit), time (on this device) or compute (samples)"),
    db: Path = typer.Option(Path(DEFAULT_DB), help="run store (SQLite file)"),
    name: Optional[str] = typer.Option(None, help="the advice's name in the store (default: advice- and a digest of what it is about)"),
    as_json: bool = typer.Option(False, "--json", help="print the recommendation as one JSON object"),
    wide: bool = typer.Option(False, "--wide", help="tables as wide as they need, whatever the terminal"),
) -> None:
    """Recommend a batch size, learning rate and epochs for a model and data, with evidence.

    Probes memory and throughput, tunes the lr at a base batch, measures the noise scale and
    the local critical batch (branching), sweeps lr x B around the lr the noise scale (SGD) or
    the optimizer's rescaling rule (Adam, AdamW) predicts, and picks by a stated rule. Stored
    like a study: `batchlab report` shows it (docs/advise.md)."""
    from batchlab.advisor import advise as run_advice
    from batchlab.parsing import integer_at_least

    cap = integer_at_least("max batch", 1)(max_batch) if max_batch is not None else None
    expect_interrupts(db)
    advice = run_advice(given.pop("model", "mlp"), given.pop("data", "digits"), target=target, budget=budget,
                        optimizer=given.pop("optimizer", "sgd"), max_batch=cap, prefer=prefer, db=db, name=name,
                        **given)
    if as_json:
        typer.echo(advice.to_json())
        return
    show(advice, wide)
    say(f"stored as {advice.name!r} in {db}; the page: batchlab report --db {db}", wide=wide)


def show(advice, wide: bool = False) -> None:
    """The recommendation, the per-B evidence, the noise and the rules, then warnings and the rule."""
    rec = advice.recommendation
    if not rec["reached"]:
        say(f"no recommendation: target {rec['target']} was not reached within the budget", wide=wide)
    else:
        say(_headline(rec), wide=wide)
        _per_batch(advice.tables["per_batch"], rec["batch_size"], wide)
        say(_noise_line(rec), wide=wide)
        _rules(advice.tables["rules"], wide)
    for line in rec["warnings"]:
        say(f"- warning: {line}", wide=wide)
    if rec["cut"]:
        say("- cut for the time budget: " + "; ".join(rec["cut"]), wide=wide)
    say(f"- rule: {rec['rule']}", wide=wide)
    say(f"- took {rec['seconds']:.0f} s of a {rec['budget']:.0f} s budget; {rec['memory']}", wide=wide)


def _headline(rec: dict) -> str:
    extra = ", ".join(f"{k}={rec[k]:g}" for k in ("momentum", "beta1", "beta2", "eps", "weight_decay")
                      if isinstance(rec.get(k), (int, float)) and not isinstance(rec.get(k), bool))
    up, ep, sec = rec["updates"], rec["epochs_to_target"], rec["wall_seconds"]
    return (f"recommended: B={rec['batch_size']} lr={rec['lr']:g} {rec['optimizer']}" + (f" ({extra})" if extra else "")
            + f", {rec['epochs']} epochs\n"
            f"to {rec['target']}: {_iv(up)} updates, {_iv(ep)} epochs, {_iv(sec, 's')} of training steps "
            f"(95% intervals: {rec['interval_method']}); regime: {rec['regime'] or 'no fit'}; fastest B={rec['fastest_batch']}, "
            f"fewest samples B={rec['cheapest_batch']}")


def _iv(d: dict, unit: str = "") -> str:
    if d["low"] is None or not math.isfinite(d["low"]):
        return f"{d['value']:.3g}{unit}"
    return f"{d['value']:.3g}{unit} [{d['low']:.3g}, {d['high']:.3g}]"


def _noise_line(rec: dict) -> str:
    crit, local, simple = rec["critical_batch"], rec["local_critical_batch"], rec["b_simple"]
    fit = _iv(crit) + (f" ({crit['method']})" if crit["method"] else f" ({crit['why']})" if crit["why"] else "")
    loc = f"{'>= ' if local['censored'] else ''}{local['value']:.3g} (branching at epoch {local['epoch']})" \
        if local and local["value"] is not None and math.isfinite(local["value"]) else "not measured"
    simp = f"{simple['value']:.3g} (exact, epoch {simple['epoch']})" if simple and simple["value"] is not None \
        and math.isfinite(simple["value"]) else "not measured"
    return f"critical batch: fitted B_crit {fit}; local {loc}; B_simple {simp}"


def _per_batch(table, chosen: int, wide: bool) -> None:
    from rich.table import Table

    out = Table(title="each batch size at its best lr (geometric mean over seeds, 95% interval)")
    for column in ("B", "lr", "updates", "epochs", "seconds", "regime"):
        out.add_column(column, justify="left" if column == "regime" else "right")
    for r in table.itertuples():
        mark = "*" if r.batch_size == chosen else ("+" if r.pareto else "")
        if isinstance(r.lr, float) and math.isnan(r.lr):
            out.add_row(f"{r.batch_size}{mark}", "-", "not reached", "", "", "")
            continue
        out.add_row(f"{r.batch_size}{mark}", f"{r.lr:.3g}", _iv({"value": r.steps, "low": r.steps_low, "high": r.steps_high}),
                    f"{r.epochs:.3g}", f"{r.seconds:.3g}", r.regime or "")
    console(wide).print(out)
    say("* recommended, + on the time / samples Pareto front", wide=wide)


def _rules(rules, wide: bool) -> None:
    """What the linear and square-root lr rules predicted from the base batch size, per B, against
    the best lr the sweep found (and the grid neighbours it lies between)."""
    if rules.empty:
        return
    from rich.table import Table

    out = Table(title="lr rules from the base batch size against the sweep's best lr")
    names = [n for n in ("linear", "square_root", "noise_scale") if f"{n}_lr" in rules]
    for column in ["B", "best lr", "lies between"] + [n.replace("_", " ") for n in names]:
        out.add_column(column, justify="right")
    for r in rules.to_dict("records"):
        out.add_row(str(r["batch_size"]), f"{r['best_lr']:.3g}", f"{r['bracket_low']:.3g} .. {r['bracket_high']:.3g}",
                    *[f"{r[n + '_lr']:.3g} {'yes' if r[n + '_holds'] else 'no'}" for n in names])
    console(wide).print(out)
