"""``batchlab.advisor``: which batch size, lr and epochs for *this* model and data, with evidence.

Every setting is checked and the data and model resolved before anything trains; then the steps
of ``steps.py`` run within the time budget (``plan.py``), the choice is made by
``analysis/advice.py``'s rule, and the advice is recorded in the store with every table it rests
on (kind ``advice``), so ``batchlab report`` shows it as a page of its own.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from batchlab.advisor import notices, plan, steps
from batchlab.analysis import advice as analysis
from batchlab.api import prepare
from batchlab.errors import BatchlabError
from batchlab.store import Store
from batchlab.targets import Target, parse_target
from batchlab.version import __version__

CHOSEN_BY_ADVISE = ("batch_size", "lr", "epochs", "seeds", "phases", "micro_batch")
EXTENSIONS = 2  # rounds of one more lr beyond a best at the edge of its grid
OPTIMIZER_FIELDS = {"sgd": ("momentum", "nesterov", "weight_decay"),
                    "adam": ("beta1", "beta2", "eps", "weight_decay"),
                    "adamw": ("beta1", "beta2", "eps", "weight_decay")}


@dataclass
class Advice:
    """A recommendation (``recommendation``: one JSON-able dict, ``advise --json`` prints it) and
    the evidence tables it rests on (``tables``: DataFrames by name)."""

    name: str
    recommendation: dict[str, Any]
    tables: dict[str, pd.DataFrame]

    def to_json(self) -> str:
        return json.dumps(plain(self.recommendation))

    @property
    def batch_size(self) -> int | None:
        return self.recommendation["batch_size"]

    @property
    def lr(self) -> float | None:
        return self.recommendation["lr"]

    @property
    def epochs(self) -> int | None:
        return self.recommendation["epochs"]


def advise(model: Any = "mlp", data: Any = "digits", *, target: str, budget: str | float = "10m",
           optimizer: str = "sgd", max_batch: int | None = None, prefer: str = "balanced",
           db: Any = "batchlab.db", name: str | None = None, progress: Callable[[int], None] | None = None,
           **settings: Any) -> Advice:
    """Recommend a batch size, lr (and the optimizer's other settings) and epochs to reach
    ``target`` (e.g. ``"test_acc>=0.9"``) with ``model`` on ``data`` within ``budget`` (``"10m"``,
    ``"90s"`` or seconds). ``prefer``: ``balanced`` (updates x samples, near B_crit), ``time`` (on this device) or ``compute``.
    ``settings``: any training setting of ``batchlab.train`` the advisor should keep fixed
    (momentum, weight_decay, hidden, ...); batch size, lr, epochs and seeds are its to choose.

    Example:
        >>> advice = batchlab.advisor("mlp", "digits", target="test_acc>=0.95", budget="3m")
        >>> advice.batch_size, advice.lr, advice.epochs
    """
    goal, seconds, fixed = _check(target, budget, optimizer, max_batch, prefer, settings)
    configs, dataset, _ = prepare(data, model, **fixed, batch_size=1, epochs=1)
    name = name or _default_name(configs[0], goal, optimizer, prefer, max_batch)
    with Store(db) as store:
        store.check_writable()
    clock = plan.Clock(seconds)
    job = steps.Job(data, model, fixed, db, dataset.n_train, progress)
    evidence = _gather(job, goal, clock, max_batch)
    evidence["feature_warning"] = notices.unscaled_features(dataset.x_train, fixed.get("standardize"))
    result = _assemble(name, job, goal, clock, evidence, prefer)
    labels = {"data": configs[0].data.name, "model": configs[0].model.name}
    _record(db, name, result, job, {**fixed, **labels}, goal, seconds, clock)
    return result


def _check(target: str, budget, optimizer: str, max_batch, prefer: str, settings: dict) -> tuple[Target, float, dict]:
    goal = parse_target(target)
    seconds = plan.parse_budget(budget)
    if prefer not in analysis.PREFERENCES:
        raise BatchlabError(f"prefer must be one of {', '.join(analysis.PREFERENCES)}, got {prefer!r}")
    if optimizer not in plan.CENTER_LR:
        raise BatchlabError(f"advise tunes sgd, adam or adamw, got optimizer {optimizer!r}")
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise BatchlabError(f"max batch must be an integer >= 1, got {max_batch!r}")
    if settings.get("devices") not in (None, 1):
        raise BatchlabError("advise measures on one device: leave devices out (the batch size it recommends can "
                            "then be split over devices, docs/devices.md)")
    chosen = sorted(set(settings) & set(CHOSEN_BY_ADVISE))
    if chosen:
        raise BatchlabError(f"advise chooses {', '.join(chosen)} itself: leave {'it' if len(chosen) == 1 else 'them'} out")
    return goal, seconds, {**_one_value_each(settings), "optimizer": optimizer}


def _one_value_each(settings: dict) -> dict:
    """The fixed settings read as ``train`` reads them (text from the command line included),
    each grid axis held to a single value: the advisor varies B and lr, nothing else."""
    from batchlab.settings import read_given

    values = read_given(dict(settings))
    for name, value in values.items():
        if isinstance(value, list):
            if len(value) != 1:
                raise BatchlabError(f"advise keeps {name} fixed: give one value, not {len(value)}")
            values[name] = value[0]
    return {**settings, **values}


def _default_name(config, goal: Target, optimizer: str, prefer: str, max_batch) -> str:
    """``advice-<digest>`` of what the advice is about: data, model, fixed settings, target."""
    about = json.dumps([config.data.to_dict() if hasattr(config.data, "to_dict") else str(config.data),
                        str(config.model), str(config.optimizer), str(goal), optimizer, prefer, max_batch],
                       sort_keys=True, default=str)
    return "advice-" + hashlib.sha256(about.encode()).hexdigest()[:8]


def _gather(job: steps.Job, goal: Target, clock: plan.Clock, max_batch) -> dict[str, Any]:
    """Run the steps in order; what each measured, by name (the base step's failure ends early)."""
    found, throughput = steps.probe(job, plan.candidate_sizes(job.n_train, max_batch), clock, max_batch)
    if found.fits is None:
        raise BatchlabError(f"no batch size could be trained here: {found.describe()}")
    tested = [int(b) for b in throughput.batch_size if b <= found.fits]
    b0 = plan.base_batch(tested)
    base_results, base_table, base_epochs, base_lrs = steps.tune_base(job, b0, throughput, clock, goal)
    out = {"memory": found, "throughput": throughput, "b0": b0, "base_table": base_table, "base_lrs": base_lrs,
           "base_epochs": base_epochs, "base_results": base_results}
    row = base_table.iloc[0]
    if math.isnan(row.lr):
        return out
    exact, branches, local = steps.measure_noise(job, b0, float(row.lr), base_epochs, float(row.epochs), max(tested),
                                                 clock)
    noise = local["value"] if math.isfinite(local["value"]) else steps.summary_of(exact)
    near = [lr for lr in base_lrs if abs(math.log(lr / row.lr)) < math.log(plan.LR_STEP) * 2.01]
    base = {"lrs": near, "epochs": base_epochs, "steps": float(row.steps),
            "cohort_share": steps.cohort_share(base_results, throughput, b0)}
    rescaled = _rescaler(job, b0, float(row.lr), noise)
    results = steps.sweep(job, tested, b0, base, noise, throughput, clock, rescaled)
    a, per_sample = analysis.step_time_fit(throughput.batch_size, throughput.seconds_per_step)
    throughput["seconds_per_step_fit"] = a + per_sample * throughput.batch_size
    seconds_per_step = dict(zip(throughput.batch_size.astype(int), throughput.seconds_per_step_fit))
    history, summary = steps.frames(results)
    settings, table = analysis.per_batch(history, summary, goal, seconds_per_step, job.n_train)
    for _ in range(EXTENSIONS):
        if not steps.extend_edges(job, table, results, clock, rescaled):
            break
        history, summary = steps.frames(results)
        settings, table = analysis.per_batch(history, summary, goal, seconds_per_step, job.n_train)
    out.update(exact=exact, branches=branches, local=local, noise=noise, base_lr=float(row.lr), history=history,
               summary=summary, settings=settings, per_batch=table)
    return out


def _rescaler(job: steps.Job, b0: int, lr: float, noise: float) -> Callable[[int], dict]:
    """B -> the lr and optimizer settings the sweep centres its grid on, from the best lr at b0.
    SGD: McCandlish et al.'s lr(B) = lr_max / (1 + B_noise / B) with the measured noise scale
    (linear scaling below it, saturating above it, where linear scaling over-shoots into
    divergence; linear when no noise scale was measured). Adam and AdamW: their rules in
    ``batchlab/rescale.py`` (square-root lr, beta2^k, eps / sqrt(k), AdamW's decay timescale).
    Warmup is not added: the sweep's runs are short and its lr grid brackets the centre."""
    from batchlab import rescale

    given = {k: job.settings[k] for k in ("momentum", "beta1", "beta2", "eps", "weight_decay")
             if job.settings.get(k) is not None}
    base = rescale.Setting(batch_size=b0, lr=lr, optimizer=job.optimizer, **given)
    predict = analysis.lr_rules(b0, lr, noise)

    def at(b: int) -> dict:
        if job.optimizer == "sgd":
            return {"lr": predict["noise_scale" if "noise_scale" in predict else "linear"](b)}
        new = rescale.rescale(base, b).setting
        out = {"lr": new.lr, "beta2": new.beta2, "eps": new.eps}
        if new.weight_decay is not None:
            out["weight_decay"] = new.weight_decay
        return out

    return at


def _assemble(name: str, job: steps.Job, goal: Target, clock: plan.Clock, ev: dict, prefer: str) -> Advice:
    """The recommendation and its evidence tables from what the steps measured."""
    tables = {"throughput": ev["throughput"], "base": ev["base_table"]}
    warnings = [w for w in [ev["feature_warning"]] if w]
    common = {"target": str(goal), "optimizer": job.optimizer, "prefer": prefer, "rule": analysis.recommendation_rule(prefer),
              "memory": ev["memory"].describe(), "largest_fitting_batch": ev["memory"].fits,
              "base_batch": ev["b0"], "cut": list(clock.cut), "seconds": round(clock.used, 1), "budget": clock.budget}
    if "per_batch" not in ev or analysis.choose(ev["per_batch"], prefer) is None:
        return _not_reached(name, goal, ev, tables, common, warnings)
    table, settings = ev["per_batch"], ev["settings"]
    runs = analysis.runs_of(ev["history"], ev["summary"], goal)
    crit = analysis.critical_batch(runs, settings, table)
    table["regime"] = [analysis.regime(crit["value"], b) for b in table.batch_size]
    choice = analysis.choose(table, prefer)
    b = int(choice.batch_size)
    rules = analysis.rule_check(table, settings, analysis.lr_rules(ev["b0"], ev["base_lr"], ev["noise"]))
    b_simple = steps.summary_of(ev["exact"])
    warnings += notices.of_choice(table, choice, crit, b_simple, ev, job.optimizer)
    epochs = int(math.ceil(choice.epochs_high if math.isfinite(choice.epochs_high) else 1.25 * choice.epochs))
    rec = {"batch_size": b, "lr": float(choice.lr), "epochs": epochs, "reached": True,
           **_optimizer_settings(job, ev, b),
           "updates": _iv(choice, "steps"), "epochs_to_target": _iv(choice, "epochs"),
           "wall_seconds": _iv(choice, "seconds"), "samples": _iv(choice, "samples"),
           "interval_method": choice.interval, "regime": choice.regime,
           "fastest_batch": int(analysis.choose(table, "time").batch_size),
           "cheapest_batch": int(analysis.choose(table, "compute").batch_size),
           "pareto_batches": [int(x) for x in table.batch_size[table.pareto]],
           "critical_batch": {k: crit[k] for k in ("value", "low", "high", "method", "why", "s_min")},
           "local_critical_batch": ev["local"],
           "b_simple": {"value": b_simple, "epoch": int(ev["exact"].epoch.iloc[-1]) if len(ev["exact"]) else None},
           **common, "warnings": warnings}
    tables.update(per_batch=table, settings=settings, noise=ev["exact"], branches=ev["branches"], rules=rules)
    return Advice(name, rec, tables)


def _not_reached(name: str, goal: Target, ev: dict, tables: dict, common: dict, warnings: list[str]) -> Advice:
    """An honest "not reached": no batch size, lr or epochs, and the runs that came closest."""
    history = ev["history"] if "per_batch" in ev else steps.frames(ev["base_results"])[0]
    closest = analysis.closest_runs(history, goal)
    tables["closest"] = closest
    warnings.append(f"target {goal} not reached by any usable setting within the budget; closest: " +
                    "; ".join(f"B={r.batch_size} lr={r.lr:g} seed {r.seed}: {r.best:.4g} at epoch {r.epoch}"
                              for r in closest.itertuples()))
    rec = {"batch_size": None, "lr": None, "epochs": None, "reached": False, **common, "warnings": warnings,
           "critical_batch": None, "local_critical_batch": None, "b_simple": None}
    return Advice(name, rec, tables)


def _iv(row: pd.Series, key: str) -> dict:
    return {"value": float(row[key]), "low": float(row[f"{key}_low"]), "high": float(row[f"{key}_high"])}


# The recommendation's names for the optimizer's settings -> their columns in a summary frame.
COLUMNS = {"momentum": "momentum", "nesterov": "optimizer.nesterov", "beta1": "optimizer.b1", "beta2": "optimizer.b2",
           "eps": "optimizer.eps", "weight_decay": "optimizer.weight_decay"}


def _optimizer_settings(job: steps.Job, ev: dict, b: int) -> dict:
    """The optimizer's other settings at the recommended B, as its runs trained (rescaled from the
    base batch size's by the optimizer's rules)."""
    chosen = ev["summary"][ev["summary"].batch_size == b]
    out = {}
    for key in OPTIMIZER_FIELDS[job.optimizer]:
        if COLUMNS[key] in chosen and len(chosen):
            value = chosen[COLUMNS[key]].iloc[0]
            out[key] = value.item() if hasattr(value, "item") else value
    return out


def _record(db, name: str, advice: Advice, job: steps.Job, fixed: dict, goal: Target, seconds: float,
            clock: plan.Clock) -> None:
    """Store the advice as a record of kind ``advice``: settings (``fixed``, with the data's and
    the model's names), recommendation, the evidence tables and the run ids of each step (which
    the report reads back)."""
    shown = {k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v)[:80])
             for k, v in fixed.items()}
    advice.recommendation["seconds"] = round(clock.used, 1)
    record = {"kind": "advice", "settings": plain(shown), "target": str(goal), "budget": seconds,
              "recommendation": plain(advice.recommendation), "groups": job.groups, "version": __version__,
              "tables": {k: plain(v.to_dict("records")) for k, v in advice.tables.items()},
              "seconds": round(clock.used, 1), "created": time.time()}
    with Store(db) as store:
        store.write_study(name, record)


def plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars as Python numbers, NaN and infinities as None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.bool_):
        return bool(value)
    return value
