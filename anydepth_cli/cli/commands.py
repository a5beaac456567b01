"""The Typer command and group classes of every `anydepth` command: their help shows flags
without a value type (Typer would print `<bool>` beside `--help`, `--json` and the like)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from typer.core import TyperCommand, TyperGroup, TyperOption

if TYPE_CHECKING:
    from typer._click import HelpFormatter


def _untype_flags(command: TyperCommand | TyperGroup, ctx: typer.Context) -> None:
    """Give every flag of `command` (built-in ones included) an empty metavar, which help prints as is."""
    for param in command.get_params(ctx):
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""


class Command(TyperCommand):
    """A command whose help shows no type beside its flags."""

    def format_help(self, ctx: typer.Context, formatter: HelpFormatter) -> None:
        _untype_flags(self, ctx)
        super().format_help(ctx, formatter)


class Group(TyperGroup):
    """A group of commands whose help shows no type beside its flags."""

    def format_help(self, ctx: typer.Context, formatter: HelpFormatter) -> None:
        _untype_flags(self, ctx)
        super().format_help(ctx, formatter)
