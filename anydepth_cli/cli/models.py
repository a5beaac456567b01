"""`anydepth models`: list the registry, download ahead of an offline session, free the cache."""

from __future__ import annotations

from typing import Annotated

import typer

from anydepth_cli.cli.commands import Command, Group
from anydepth_cli.cli.console import err, out

app = typer.Typer(help="List, download and remove the published models.", no_args_is_help=False, cls=Group)


@app.callback(invoke_without_command=True)
def models(ctx: typer.Context) -> None:
    """List the models: name, file, parameters, licence and whether it is in the Hub cache."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from anydepth_cli.weights.hub import cached_path
    from anydepth_cli.models.network import build_network
    from anydepth_cli.models.registry import DEFAULT_MODEL, MODELS

    table = Table(title="Models", caption="* default")
    table.add_column("name", no_wrap=True)
    table.add_column("params", justify="right")
    table.add_column("size", justify="right")
    table.add_column("licence")
    table.add_column("cached")
    for spec in MODELS.values():
        params = sum(t.numel() for t in build_network(spec.config, device="meta").state_dict().values())
        path = cached_path(spec.repo_id, spec.filename)
        name = spec.name + (" *" if spec.name == DEFAULT_MODEL else "")
        table.add_row(name, f"{params / 1e6:.1f} M", f"{params * 4 / 2**20:.0f} MB", spec.licence,
                      "yes" if path else "no")
    out.print(table)
    for spec in MODELS.values():
        out.print(f"  {spec.name}: {spec.repo_id}/{spec.filename}", highlight=False)


@app.command(cls=Command)
def download(name: Annotated[str, typer.Argument(help="Registry model name.")]) -> None:
    """Download a model into the Hub cache (for use offline later)."""
    from anydepth_cli.weights.hub import download as hub_download
    from anydepth_cli.models.registry import get_model

    spec = get_model(name)
    path = hub_download(spec.repo_id, spec.filename, model=spec.name)
    err.print(f"{spec.name}: {path}")


@app.command("rm", cls=Command)
def remove(name: Annotated[str, typer.Argument(help="Registry model name.")]) -> None:
    """Remove a model's file from the Hub cache."""
    from anydepth_cli.weights.hub import remove_cached
    from anydepth_cli.models.registry import get_model

    spec = get_model(name)
    freed = remove_cached(spec.repo_id, spec.filename)
    err.print(f"{spec.name}: {'removed, ' + f'{freed / 2**20:.1f} MB freed' if freed else 'was not cached'}")
