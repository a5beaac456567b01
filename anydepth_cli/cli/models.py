"""`anydepth models`: list the registry, download ahead of an offline session, free the cache."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from anydepth_cli.cli.commands import Command, Group
from anydepth_cli.cli.console import err, out

if TYPE_CHECKING:
    from anydepth_cli.models.config import NetworkConfig

app = typer.Typer(help="List, describe, download and remove the published models.", no_args_is_help=False, cls=Group)


@app.callback(invoke_without_command=True)
def models(ctx: typer.Context) -> None:
    """List the models: name, output (depth or disparity), parameters, licence and whether it is cached."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from anydepth_cli.weights.hub import cached_path
    from anydepth_cli.models.network import build_network
    from anydepth_cli.models.registry import DEFAULT_MODEL, ENCODER_MODELS, MODELS

    table = Table(title="Models", caption="* default")
    table.add_column("name", no_wrap=True)
    table.add_column("output")
    table.add_column("params", justify="right")
    table.add_column("size", justify="right")
    table.add_column("licence")
    table.add_column("cached")
    for spec in MODELS.values():
        params = sum(t.numel() for t in build_network(spec.config, device="meta").state_dict().values())
        path = cached_path(spec.repo_id, spec.filename)
        name = spec.name + (" *" if spec.name == DEFAULT_MODEL else "")
        table.add_row(name, spec.output, f"{params / 1e6:.1f} M", f"{params * 4 / 2**20:.0f} MB", spec.licence,
                      "yes" if path else "no")
    out.print(table)
    for spec in MODELS.values():
        out.print(f"  {spec.name}: {spec.repo_id}/{spec.filename}", highlight=False)
    out.print("Output: affine-invariant depth (large = far) or disparity (large = near), or metric depth in metres; "
              "`anydepth models info NAME` says why.", highlight=False)
    out.print("Encoders without published heads (`anydepth train --encoder NAME`, `anydepth bench --encoder NAME`):",
              highlight=False)
    for encoder in ENCODER_MODELS.values():
        out.print(f"  {encoder.name}: {encoder.reference} — {encoder.description}; licence {encoder.licence}",
                  highlight=False, soft_wrap=True)


@app.command(cls=Command)
def info(name: Annotated[str, typer.Argument(help="Registry model name.")]) -> None:
    """Print a model's card: weights, architecture, what its output means and why, its resizing, licence, cache."""
    import json

    from anydepth_cli.models.config import RESIZES
    from anydepth_cli.models.registry import get_model
    from anydepth_cli.weights.hub import cached_path

    spec = get_model(name)
    config = spec.config
    path = cached_path(spec.repo_id, spec.filename)
    rows = [
        ("model", f"{spec.name}: {spec.description}"),
        ("weights", f"https://huggingface.co/{spec.repo_id} / {spec.filename}"),
        ("encoder", f"{config.encoder}, width {config.embed}, {config.depth} blocks, {config.heads} heads, "
                    f"patch {config.patch_size}, layers {', '.join(map(str, config.layers))}"),
        ("head", config.head),
        ("output", _meaning(config)),
        ("activation", config.activation),
        ("evidence", spec.evidence),
        ("resize", f"{config.resize}: {RESIZES[config.resize]}"),
        ("resize from", spec.resize_origin),
        ("input size", f"{spec.input_size} px ({config.input_side} side)"),
        ("licence", spec.licence),
        ("cached", str(path) if path else "no"),
        ("architecture", json.dumps(config.to_dict())),
    ]
    for key, value in rows:
        out.print(f"{key:>12}  {value}", highlight=False, soft_wrap=True)


def _meaning(config: NetworkConfig) -> str:
    """What a network's numbers are: the metric range, or affine-invariance."""
    from anydepth_cli.io.writers import describe_kind

    if config.metric:
        return f"{describe_kind(config.output)}, range 0–{config.max_depth:g} m (sigmoid × max_depth)"
    return f"affine-invariant {describe_kind(config.output)}, scale and shift unknown"


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
