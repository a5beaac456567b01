"""`--help` of every command reads cleanly at 80 and 120 columns: no `<bool>` beside flags, and no line
that ends early because the help text had a line break in the source (Typer/rich keep those breaks)."""

from __future__ import annotations

import inspect
import re

import pytest
import typer

from anydepth_cli.cli import app
from conftest import cli_env, run_cli

def _commands(command: typer.core.TyperGroup | typer.core.TyperCommand, path: tuple[str, ...] = ()):
    """(path, command) for `command` and every visible subcommand below it."""
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            yield from _commands(sub, (*path, name))


COMMANDS = dict(_commands(typer.main.get_command(app)))


def _param(path: tuple[str, ...]):
    return pytest.param(path, id=" ".join(path) or "anydepth")


def test_every_command_is_checked():
    assert {" ".join(path) for path in COMMANDS} >= {
        "", "predict", "bench", "eval", "score", "doctor", "models", "models download", "models rm", "models info"}


@pytest.mark.parametrize("path", [_param(path) for path in COMMANDS])
def test_help_texts_have_one_line_paragraphs(path):
    """Each paragraph of a command's help, and each option's help, is one line in the source; rich wraps it."""
    command = COMMANDS[path]
    texts = {"the command": command.help or ""}
    texts.update({f"--{param.name}": param.help or "" for param in command.params if getattr(param, "help", None)})
    broken = {where: paragraph for where, text in texts.items()
              for paragraph in inspect.cleandoc(text).split("\n\n") if "\n" in paragraph.strip()}
    assert not broken, f"paragraphs with line breaks: {broken}"


def _early_breaks(lines: list[str], start: int, width: int) -> list[str]:
    """Consecutive lines of one paragraph (text from column `start`, `width` wide) where the next line's
    first word would have fitted on the line before: a break the text itself asked for."""
    found = []
    for above, below in zip(lines, lines[1:]):
        first, second = above[start:].rstrip(), below[start:].strip()
        if first and second and len(first) + 1 + len(second.split()[0]) <= width:
            found.append(f"{first!r} / {second!r}")
    return found


def _description_breaks(text: str, columns: int) -> list[str]:
    """Early breaks in the help's description (between the usage line and the first panel)."""
    lines = text.splitlines()
    usage = next(i for i, line in enumerate(lines) if line.strip().startswith("Usage:"))
    end = next((i for i, line in enumerate(lines) if line.startswith("╭")), len(lines))
    return _early_breaks(lines[usage + 1:end], 1, columns - 2)


def _commands_panel_breaks(text: str) -> list[str]:
    """Early breaks in the one-line summaries of the Commands panel."""
    lines = text.splitlines()
    top = next((i for i, line in enumerate(lines) if line.startswith("╭─ Commands")), None)
    if top is None:
        return []
    bottom = next(i for i in range(top, len(lines)) if lines[i].startswith("╰"))
    rows = [line[1:-1] for line in lines[top + 1:bottom]]
    start = re.match(r" \S+\s+", rows[0]).end()
    width = len(rows[0]) - start - 1
    found, row = [], []
    for line in rows + [" end"]:  # a sentinel row ends the last one
        if line[:start].strip():
            found += _early_breaks(row, start, width)
            row = []
        row.append(line)
    return found


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("path", [_param(path) for path in COMMANDS])
def test_help_reads_cleanly(path, columns):
    env = cli_env()
    env["COLUMNS"] = str(columns)
    result = run_cli(*path, "--help", env=env)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "<bool>" not in text
    assert max(len(line) for line in text.splitlines()) <= columns
    assert not _description_breaks(text, columns)
    assert not _commands_panel_breaks(text)
