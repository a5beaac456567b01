"""The `anydepth` command: parse, call, report. Heavy imports happen inside the commands."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import NoReturn

import typer

from anydepth_cli import __version__
from anydepth_cli.cli import bench as bench_cmd
from anydepth_cli.cli import doctor as doctor_cmd
from anydepth_cli.cli import evaluate as evaluate_cmd
from anydepth_cli.cli import export as export_cmd
from anydepth_cli.cli import models as models_cmd
from anydepth_cli.cli import predict as predict_cmd
from anydepth_cli.cli import score as score_cmd
from anydepth_cli.cli import serve as serve_cmd
from anydepth_cli.cli import train as train_cmd
from anydepth_cli.cli.commands import Command, Group
from anydepth_cli.cli.console import fail
from anydepth_cli.errors import AnyDepthError

app = typer.Typer(
    name="anydepth",
    help="Relative depth from a photo, a folder or a video with AnyDepth's Simple Depth Transformer.",
    no_args_is_help=True,
    cls=Group,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("predict", cls=Command, no_args_is_help=True)(predict_cmd.predict)
app.add_typer(models_cmd.app, name="models")
app.command("bench", cls=Command)(bench_cmd.bench)
app.command("eval", cls=Command)(evaluate_cmd.evaluate)
app.command("score", cls=Command)(score_cmd.score)
app.command("train", cls=Command, no_args_is_help=True)(train_cmd.train)
app.command("export", cls=Command)(export_cmd.export)
app.command("doctor", cls=Command)(doctor_cmd.doctor)
app.command("serve", cls=Command)(serve_cmd.serve)


OUT_OF_MEMORY = "out of memory: lower --batch-size or --input-size, or use --tile for large images"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"anydepth {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version and exit."),
) -> None:
    """Relative depth from a photo, a folder or a video with AnyDepth's Simple Depth Transformer."""


def _bare_flags(argv: list[str]) -> list[str]:
    """`--tile` with no mode after it means `--tile on`."""
    out = []
    for i, arg in enumerate(argv):
        out.append(arg)
        following = argv[i + 1] if i + 1 < len(argv) else None
        if arg == "--tile" and following not in predict_cmd.TILE_MODES:
            out.append("on")
    return out


class _Interrupted(BaseException):
    """Ctrl+C. Typer turns a KeyboardInterrupt into a silent exit, so SIGINT raises this instead;
    like KeyboardInterrupt it is no Exception, so no handler of errors swallows it."""


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise _Interrupted


def main() -> None:
    """Entry point: run the app, turning our errors and Ctrl+C into one line and an exit code."""
    signal.signal(signal.SIGINT, _interrupt)
    try:
        app(args=_bare_flags(sys.argv[1:]), prog_name="anydepth")
    except AnyDepthError as exc:
        fail(str(exc), exc.exit_code)
    except _Interrupted:
        fail("interrupted", 130)
    except MemoryError:
        fail(OUT_OF_MEMORY, 1)
    except RuntimeError as exc:  # torch.OutOfMemoryError derives from RuntimeError; anything else is a bug
        if type(exc).__name__ != "OutOfMemoryError":
            raise
        fail(OUT_OF_MEMORY, 1)
