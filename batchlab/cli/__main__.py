"""``python -m batchlab.cli``: the installed ``batchlab`` command."""

from batchlab.cli import console_main

if __name__ == "__main__":
    console_main()
