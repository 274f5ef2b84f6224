"""The README's setup section holds exactly the two commands, and CI runs the second."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def setup_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Setup", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(?:bash|sh)?\n(.+?)\n```", section)


def test_setup_has_two_commands_and_ci_runs_the_test_one():
    commands = setup_commands()
    assert len(commands) == 2
    assert "batchlab tour" in commands[0] and "pip install" in commands[0]
    assert "pytest" in commands[1] and "pip install" in commands[1]
    extracted = subprocess.run(["awk", '/<!-- test-command -->/{getline; getline; print; exit}', "README.md"],
                               cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert extracted == commands[1]
