"""Write (or with --check, verify) the shell completion scripts in completions/.

    python tools/make_completions.py          # regenerate completions/anydepth.{bash,zsh,fish,ps1}
    python tools/make_completions.py --check  # exit 1 and name the stale files

The scripts are Typer's, made for this program's name and completion variable: at completion
time they ask `anydepth` itself for candidates, so new commands and options complete without
regenerating. They go stale only when the program name or Typer's script format changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from typer._completion_shared import get_completion_script

from anydepth_cli.cli import app

FOLDER = Path(__file__).resolve().parents[1] / "completions"
SHELLS = {"bash": "bash", "zsh": "zsh", "fish": "fish", "powershell": "ps1"}


def scripts() -> dict[Path, str]:
    """Completion script text for each shell, by the file it belongs in."""
    name = app.info.name
    variable = f"_{name.replace('-', '_').upper()}_COMPLETE"
    return {FOLDER / f"{name}.{suffix}": get_completion_script(prog_name=name, complete_var=variable, shell=shell)
            for shell, suffix in SHELLS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale or missing files")
    args = parser.parse_args(argv)
    stale = [path for path, text in scripts().items() if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(FOLDER.parent)} (run python tools/make_completions.py)")
        return 1 if stale else 0
    FOLDER.mkdir(exist_ok=True)
    for path, text in scripts().items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
