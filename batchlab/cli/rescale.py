"""The ``rescale`` command: the hyperparameters for a new batch size, rule by rule with sources
(``batchlab/rescale.py``, ``docs/rescale.md``). Arithmetic only: nothing trains."""

from __future__ import annotations

from typing import Optional

import typer

from batchlab.cli import app, console, say

FROM_HELP = "the current setting, e.g. \"B=64 lr=3e-4 optimizer=adamw beta2=0.999 weight_decay=0.01\""


@app.command()
def rescale(
    from_: str = typer.Option(..., "--from", help=FROM_HELP),
    to_batch: int = typer.Option(..., "--to-batch", help="the new batch size B'"),
    noise_scale: Optional[float] = typer.Option(None, "--noise-scale",
                                                help="a measured noise scale (B_simple), for a note when B' "
                                                     "exceeds it"),
    as_json: bool = typer.Option(False, "--json", help="print the result as one JSON object"),
    wide: bool = typer.Option(False, "--wide", help="the table as wide as it needs, whatever the terminal"),
) -> None:
    """Hyperparameters for a new batch size B', rule by rule with formulas and sources.

    k = B'/B. SGD: linear lr with warmup (Goyal). Adam, RMSprop: lr and eps by sqrt(k)
    (Malladi), beta2^k (Marek). AdamW: also weight decay (Bergsma). See docs/rescale.md."""
    from batchlab import rescale as rules

    result = rules.rescale(rules.parse_setting(from_), to_batch, noise_scale=noise_scale)
    if as_json:
        import json

        typer.echo(json.dumps(result.to_dict()))
        return
    _print_table(result.table(), wide)
    for note in result.notes:
        say(f"- {note}", wide=wide)
    say("new setting (for --from):", wide=wide)
    typer.echo(rules.format_setting(result.setting))  # one line, never wrapped: it is pasted back


def _print_table(rows: list[dict], wide: bool) -> None:
    """One row per rule: rule, before, after, formula, source (values to 6 significant digits)."""
    from rich.table import Table

    b, b_new = rows[0]["before"], rows[0]["after"]  # the first rule is the batch size's
    table = Table(title=f"B = {b} -> B' = {b_new}, k = {b_new / b:g}")
    for name in ("rule", "before", "after"):
        table.add_column(name, justify="right" if name != "rule" else "left", no_wrap=True)
    table.add_column("formula")
    table.add_column("source", no_wrap=True)
    for row in rows:
        table.add_row(row["name"], f"{row['before']:.6g}", f"{row['after']:.6g}", row["formula"], row["source"])
    console(wide).print(table)
