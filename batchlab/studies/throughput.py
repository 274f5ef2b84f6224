"""Throughput: samples per second and time to a target vs batch size, on this machine.

The parallelism claim behind large batches: a bigger batch does more work per update in
parallel, so samples per second grow with B; but it also needs more samples to reach a target
(``critical-batch``), so the time to the target has a minimum somewhere. Digits (1437 train),
MLP 256-256(relu)-10 (Shen's width: enough work per update that compute, not overhead, is
timed), SGD momentum 0.9, the lr following the square-root rule lr = lr_ref sqrt(B /
ref_batch) (Hoffer et al. 2017; not tuned per B), the partial last batch dropped. Every
run trains as its own cohort (``Grid.alone``), so each run's ``train_seconds`` is its own
clock; every run trains the same number of epochs, long enough that each timing spans a
fraction of a second rather than a few milliseconds. The analysis and findings:
``analysis/throughput.py``.
"""

from __future__ import annotations

from batchlab import budget
from batchlab.analysis import throughput as analysis
from batchlab.studies.base import FigureSpec, Grid, Study


def lr_for(b: int, s: dict) -> float:
    """Square-root scaling from the reference batch size (``science.md`` section 4)."""
    return round(budget.scaled_lr("sqrt", s["lr_ref"], s["ref_batch"], b), 6)


def grids(s: dict) -> list[Grid]:
    return [Grid(f"B={b}", dict(data=s["data"], model="mlp", hidden=tuple(s["hidden"]), momentum=s["momentum"],
                                batch_size=b, lr=lr_for(b, s), seeds=s["seeds"], epochs=s["epochs"], drop_last=True),
                 alone=True)
            for b in sorted(s["batch_sizes"])]


def _title(s: dict) -> str:
    return (f"{s['data']} MLP {'-'.join(str(h) for h in s['hidden'])}, SGD momentum {s['momentum']:g}, lr = "
            f"{s['lr_ref']:g} sqrt(B/{s['ref_batch']}), {s['seeds']} seeds, one run per compiled program")


def _throughput(tables, s):
    from batchlab.plots.throughput import throughput_figure

    return throughput_figure(tables["per_batch"], tables["runs"], _title(s))


def _time_to_target(tables, s):
    from batchlab.plots.throughput import time_to_target_figure

    return time_to_target_figure(tables["per_batch"], tables["fastest"].iloc[0], s["target"], _title(s))


STUDY = Study(
    name="throughput",
    question="How do samples per second and the time to a target change with the batch size on this machine?",
    source=analysis.SOURCE,
    defaults=dict(data="digits", hidden=(256, 256), momentum=0.9, batch_sizes=(8, 16, 32, 64, 128, 256, 512, 1024),
                  seeds=3, lr_ref=0.1, ref_batch=64, target="train_loss<=0.1", epochs=30,
                  resamples=1000),
    quick=dict(batch_sizes=(32, 128, 512), seeds=2, epochs=15),
    grids=grids,
    analyse=analysis.analyse,
    figures=(FigureSpec("throughput_vs_batch", _throughput, "per_batch"),
             FigureSpec("time_to_target_vs_batch", _time_to_target, "per_batch")),
    findings=analysis.findings,
    notes=analysis.notes,
    minutes=(0.85, 0.3),
    limits=dict(lr_ref=(1e-30, None), ref_batch=(1, None), resamples=(1, None)),
)
