"""`anydepth serve`: the model kept loaded behind an HTTP API and a web page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from anydepth_cli.cli.console import err
from anydepth_cli.cli.predict import DEFAULT_MAX_PIXELS, MODEL
from anydepth_cli.errors import MissingExtraError

SERVER = "Server"
LIMITS = "Limits"


def serve(
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Registry model (see `anydepth models`). \\[default: anydepth-dav2-vitb]", show_default=False, rich_help_panel=MODEL)] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="Your own .pth/.safetensors weights: a file, or hf://ORG/REPO/FILE on the Hub.", rich_help_panel=MODEL)] = None,
    arch: Annotated[Optional[Path], typer.Option(help="JSON architecture of --checkpoint.", rich_help_panel=MODEL)] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Size the network sees, in pixels (as for predict). \\[default: the model's]", show_default=False, rich_help_panel=MODEL)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel=MODEL)] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32, fp16 or bf16 (auto: bf16/fp16 on GPUs; on the CPU bf16 with AMX-BF16 or AVX512-BF16, else fp32).", rich_help_panel=MODEL)] = "auto",
    host: Annotated[str, typer.Option(help="Address to listen on; any other than loopback needs --token.", rich_help_panel=SERVER)] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", rich_help_panel=SERVER)] = 8000,
    token: Annotated[Optional[str], typer.Option(envvar="ANYDEPTH_TOKEN", show_envvar=True, help="Clients must send `Authorization: Bearer TOKEN` (/healthz and /readyz excepted).", show_default=False, rich_help_panel=SERVER)] = None,
    gallery: Annotated[Optional[Path], typer.Option(help="Also browse the results of an earlier `predict` run in this folder (read-only).", rich_help_panel=SERVER)] = None,
    max_batch: Annotated[int, typer.Option(help="Most requests run through the network together.", rich_help_panel=LIMITS)] = 4,
    max_wait_ms: Annotated[float, typer.Option(help="How long the first request of a batch waits for others, in milliseconds.", rich_help_panel=LIMITS)] = 10.0,
    queue: Annotated[int, typer.Option(help="Most requests in flight; more are answered 503 with Retry-After.", rich_help_panel=LIMITS)] = 64,
    timeout: Annotated[float, typer.Option(help="Seconds a request may wait for its answer before a 504.", rich_help_panel=LIMITS)] = 60.0,
    max_body_mb: Annotated[float, typer.Option(help="Largest request body, in MB (413 beyond).", rich_help_panel=LIMITS)] = 64.0,
    max_pixels: Annotated[int, typer.Option(help="Refuse images with more pixels than this, before decoding them (413).", rich_help_panel=LIMITS)] = DEFAULT_MAX_PIXELS,
) -> None:
    """Keep a model loaded and answer depth requests over HTTP: an API (documented at /docs) and a web page at /.

    Requests arriving within --max-wait-ms of each other run as one batch of up to --max-batch. SIGTERM or Ctrl+C stops accepting connections, answers the requests already accepted and exits 0.
    """
    try:
        from anydepth_cli.serve.app import Limits
        from anydepth_cli.serve.model import Batching
        from anydepth_cli.serve.server import ServeOptions, serve as run_server
    except ModuleNotFoundError as exc:
        raise MissingExtraError(exc.name or "fastapi", "serve") from None
    from anydepth_cli.pipelines.runtime import open_predictor
    from anydepth_cli.weights.choice import choose_weights

    options = ServeOptions(host, port, token or None, Batching(max_batch, max_wait_ms / 1000, queue),
                           Limits(int(max_body_mb * 1024 * 1024), timeout), max_pixels, gallery)
    choose_weights(model, checkpoint, arch)  # a bad model choice is refused before the server starts
    run_server(options, lambda: open_predictor(model, checkpoint, arch, device, precision, max_batch, input_size),
               lambda line: err.print(f"[dim]{line}[/]"))
