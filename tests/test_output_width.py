"""Every command's default output fits 80 columns when it goes to a pipe or a file (a terminal
gets its own width, ``--wide`` no limit); error messages are one line, whatever their length."""

from tests.conftest import run_cli


def widest(text: str) -> int:
    return max((len(line) for line in text.splitlines()), default=0)


COMMANDS = [
    ["plan", "--n", "1437", "--batch-size", "1,7,32,full", "--epochs", "1000"],
    ["train", "--data", "blobs", "--hidden", "4", "--batch-size", "50,full", "--lr", "0.05,0.1", "--epochs", "2",
     "--seeds", "2", "--instruments", "standard"],
    ["sweep", "--data", "blobs", "--hidden", "4", "--batch-sizes", "50,full", "--lr", "0.05,0.2", "--seeds", "1",
     "--epochs", "2", "--name", "narrow"],
    ["runs"],
    ["check"],
    ["export", "--out", "exported"],
    ["analyze", "--sweep", "narrow", "--target", "test_acc>=0.5", "--out", "analysis"],
    ["report", "--out", "report"],
    ["study", "list"],
    ["noise", "--data", "blobs", "--hidden", "4", "--at-epochs", "1", "--batch-sizes", "1:8", "--trials", "20",
     "--pool", "64", "--no-sharpness", "--out", "noise"],
    ["--help"],
    ["train", "--help"],
]


def test_default_output_fits_80_columns(capsys, tmp_path, monkeypatch):
    """The commands in order (train and sweep fill the store the others read)."""
    monkeypatch.chdir(tmp_path)
    for args in COMMANDS:
        with_store = args if args[0] in ("plan", "study", "--help") or "--help" in args else [*args, "--db", "runs.db"]
        code, out, err = run_cli(with_store, capsys)
        assert code == 0, (args, err)
        assert out.strip() and widest(out) <= 80, (args, out)


def test_wide_gives_the_table_its_natural_width(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, narrow, _ = run_cli(["study", "list"], capsys)
    code, wide, _ = run_cli(["study", "list", "--wide"], capsys)
    assert code == 0 and widest(wide) > 80 >= widest(narrow)
