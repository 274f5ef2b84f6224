"""Brownlee (2019): batch size controls the stability of training (``science.md`` section 2).

Blobs (500 train / 500 test), MLP 2-50(relu, he_uniform)-3, SGD lr 0.01 momentum 0.9,
200 epochs, reshuffled each epoch, batch-mean cross-entropy. Four settings:
batch GD (B=500), SGD at lr 0.01 (too large for B=1) and at lr 0.001, and mini-batch B=32.
The study measures, over seeds, what the article shows in single runs: when test accuracy
first reaches 80%, how much it jitters over the last 50 epochs, and where each ends.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from batchlab import budget
from batchlab.analysis.curves import first_reaching, late_variability, per_group
from batchlab.api import Progress, TrainResult, build_configs, run_configs
from batchlab.config import ModelConfig
from batchlab.data import load_dataset, resolve_data_config
from batchlab.models import build_model
from batchlab.plots import learning_curves, save_figure

SETTINGS = ((500, 0.01), (1, 0.01), (1, 0.001), (32, 0.01))  # (batch size, learning rate)
THRESHOLD = 0.80
LAST_EPOCHS = 50


@dataclass
class StudyOutput:
    result: TrainResult
    table: pd.DataFrame  # one row per setting, measured over seeds
    files: list[Path]
    reasoning: str


def run(out: str | Path, *, seeds: int = 5, epochs: int = 200, db: str | Path | None = None,
        force: bool = False, progress: Progress | None = None) -> StudyOutput:
    data_cfg = resolve_data_config("blobs")
    dataset = load_dataset(data_cfg)
    model_cfg = ModelConfig("mlp", (50,), "relu", "he_uniform")
    net = build_model(model_cfg, dataset.sample_shape, dataset.num_classes)
    configs = [c for b, lr in SETTINGS
               for c in build_configs(data_cfg, dataset.n_train, model_cfg, batch_size=b, epochs=epochs, lr=lr,
                                      momentum=0.9, seeds=seeds)]
    result = run_configs(configs, dataset, net, db=db, force=force, progress=progress)
    table = measure(result)
    out = Path(out)
    files = []
    history = result.history
    for metric in ("acc", "loss"):
        fig = learning_curves(history, metric, ncols=2,
                              title=f"Brownlee blobs MLP, SGD momentum 0.9: {metric} vs epoch, {seeds} seeds")
        files += save_figure(fig, out / f"learning_curves_{metric}")
    reasoning = explain(dataset.n_train, min(25, epochs))
    files += write_summary(out, table, reasoning, result)
    return StudyOutput(result, table, files, reasoning)


def measure(result: TrainResult) -> pd.DataFrame:
    """Per (B, lr): final accuracies, epoch to 80% test accuracy, late jitter; mean and std over seeds."""
    history, runs = result.history, result.summary
    by = ["batch_size", "lr"]
    columns = {
        "train_acc": runs.set_index("run_id")["train_acc"],
        "test_acc": runs.set_index("run_id")["test_acc"],
        "epoch_to_80pct_test": first_reaching(history, "test_acc", THRESHOLD),
        "jitter_last50_test": late_variability(history, "test_acc", LAST_EPOCHS),
    }
    table = None
    for name, values in columns.items():
        stats = per_group(values, runs, by).rename(columns={"mean": name, "std": f"{name}_std", "count": "seeds"})
        table = stats if table is None else table.merge(stats.drop(columns="seeds"), on=by)
    reached = per_group(columns["epoch_to_80pct_test"].notna().astype(float), runs, by)["mean"]
    table["reached_80pct"] = reached.to_numpy()
    order = {s: i for i, s in enumerate(SETTINGS)}
    table["order"] = [order.get((b, lr), 99) for b, lr in zip(table.batch_size, table.lr)]
    return table.sort_values("order").drop(columns="order").reset_index(drop=True)


def explain(n: int, epochs: int) -> str:
    gd, sgd = budget.plan(n, n, epochs), budget.plan(n, 1, epochs)
    return (f"In {epochs} epochs batch gradient descent (B={n}) makes {gd.total_steps:,} updates, "
            f"while stochastic gradient descent (B=1) makes {sgd.total_steps:,}.")


def write_summary(out: Path, table: pd.DataFrame, reasoning: str, result: TrainResult) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "summary.csv", out / "summary.md"
    table.to_csv(csv_path, index=False)
    lines = ["# Brownlee reproduction: batch size and the stability of training", "",
             reasoning, "",
             "| B | lr | seeds | train acc | test acc | epoch to 80% test | reached 80% | jitter (last 50) |",
             "|---|---|---|---|---|---|---|---|"]
    for row in table.itertuples():
        lines.append(f"| {row.batch_size} | {row.lr:g} | {row.seeds} | {row.train_acc:.3f} ± {row.train_acc_std:.3f} "
                     f"| {row.test_acc:.3f} ± {row.test_acc_std:.3f} | {row.epoch_to_80pct_test:.1f} "
                     f"| {row.reached_80pct:.0%} | {row.jitter_last50_test:.4f} |")
    lines += ["", "Accuracies at the last epoch, mean ± std over seeds. Epoch to 80%: mean over the seeds that "
              "reached it. Jitter: std of the epoch-to-epoch change of test accuracy over the last 50 epochs.",
              "", "Figures: learning_curves_acc.png, learning_curves_loss.png", ""]
    md_path.write_text("\n".join(lines))
    return [csv_path, md_path]
