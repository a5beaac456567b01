"""`anydepth bench`: SDT against the paper's DPT on this machine: parameters, FLOPs, latency, memory, FLOP/s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from anydepth_cli.cli.console import err, out

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table

    from anydepth_cli.bench.suite import BenchResult

DEFAULT_OUTPUT = Path("anydepth-bench")
MODEL = "Model"
RUN = "Running"


def bench(
    resolution: Annotated[Optional[list[int]], typer.Option("--resolution", "-r", help="Square input side in pixels; repeat for several. [default: 256, 512, 1024, each rounded to a multiple of the encoder's patch: 252, 518, 1022 for patch 14]", show_default=False, rich_help_panel=MODEL)] = None,
    encoder: Annotated[str, typer.Option(help="dinov3-vits, dinov3-vitb or dinov3-vitl (each head in its bench settings on it), a registry model (its own head, and the other heads on its encoder), or a registry encoder such as vggt-1b (SDT, and the other heads, on it).", rich_help_panel=MODEL)] = "dinov3-vitl",
    heads: Annotated[str, typer.Option(help="Comma-separated heads to measure: sdt (the paper's SDT-256), dpt (the paper's DPT-512), dav2-dpt (Depth Anything V2's DPT-256) and vggt-dpt (VGGT's own depth head, DPT-256 with 2 outputs).", rich_help_panel=MODEL)] = "sdt,dpt",
    arch: Annotated[Optional[Path], typer.Option(hidden=True, help="JSON architecture standing in for --encoder's model.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel=RUN)] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32, fp16 or bf16 (auto: bf16/fp16 autocast on GPUs; on the CPU bf16 with AMX-BF16 or AVX512-BF16, else fp32).", rich_help_panel=RUN)] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images per forward for the throughput; latency is always of one image.", rich_help_panel=RUN)] = 1,
    runs: Annotated[Optional[int], typer.Option(help="Timed forwards per configuration. [default: 50 on GPUs; on the CPU as many as fit in 30 s, 3 to 20]", show_default=False, rich_help_panel=RUN)] = None,
    warmup: Annotated[Optional[int], typer.Option(help="Untimed forwards first. [default: 10 on GPUs, 1 on the CPU, one more with --compile]", show_default=False, rich_help_panel=RUN)] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the network (compiling happens in the warm-up).", rich_help_panel=RUN)] = False,
    graphs: Annotated[bool, typer.Option("--graphs/--no-graphs", help="On CUDA, replay the forward from captured CUDA graphs, as `predict` does (capture time is reported apart).", rich_help_panel=RUN)] = True,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for bench.md, bench.json and bench.png.")] = DEFAULT_OUTPUT,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON report to stdout (the table goes to stderr).")] = False,
) -> None:
    """Measure the SDT and DPT decoders: parameters, FLOPs, latency, throughput, peak memory, FLOP/s.

    The default is the paper's set-up: DINOv3 ViT-L/16 (layers 4, 11, 17, 23) with SDT (256 fusion channels, readout, detail enhancer) against the paper's DPT (DINOv3's DPT head: 512 features, readout, BatchNorm), random weights (no download), at 256, 512 and 1024.

    Decoder FLOPs are given twice: by a correct count and by the paper's convention (twice thop's multiply-adds, which counts transposed convolutions by their output size). Writes bench.md, bench.json and bench.png into --output.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from anydepth_cli.bench.catalogue import default_resolutions
    from anydepth_cli.bench.report import to_json, write_report
    from anydepth_cli.bench.suite import BenchSettings, run_bench
    from anydepth_cli.models.config import NetworkConfig

    architecture = NetworkConfig.from_file(arch) if arch else None
    settings = BenchSettings(
        encoder=encoder, heads=tuple(h.strip() for h in heads.split(",") if h.strip()),
        resolutions=tuple(resolution or default_resolutions(encoder, architecture)), device=device,
        precision=precision, batch_size=batch_size, runs=runs, warmup=warmup, compile=compile,
        graphs=None if graphs else False, arch=architecture,
    )
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=True) as progress:
        task = progress.add_task("bench", total=None)
        result = run_bench(settings, lambda text, done, total: progress.update(task, description=text,
                                                                                 completed=done, total=total))
    paths = write_report(result, output)
    console = err if as_json else out
    console.print(results_table(result))
    captured = sum(m.capture_seconds for m in result.measurements)
    if captured:
        console.print(f"CUDA graphs captured in {captured:.2f} s, apart from the timings", highlight=False)
    print_targets(result, console)
    if as_json:
        typer.echo(json.dumps(to_json(result), indent=2))
    err.print(f"[dim]wrote {', '.join(str(p) for p in paths)}[/]", highlight=False)


def results_table(result: "BenchResult") -> "Table":
    """The measurements as a rich table, with the paper's figures (DINOv3 ViT-L/16, H100) beside ours."""
    from rich.table import Table

    from anydepth_cli.bench.report import paper_gflops, paper_latency

    s, peak = result.settings, result.matmul_peak
    labels = ", ".join(dict.fromkeys(m.label for m in result.measurements))
    table = Table(title=f"{labels} · {s['device']} {s['precision']} · batch {s['batch_size']}",
                  caption=f"of peak: of the matmul peak, {peak.flops_per_s / 1e9:,.1f} GFLOP/s · a multiply-add is 2 FLOPs "
                          "· paper conv.: twice thop's multiply-adds · paper: DINOv3 ViT-L/16 on an H100 · "
                          "all figures in bench.md")
    for name in ("head", "input", "dec. params", "dec. GFLOPs", "paper conv. (paper)", "p50 ms (paper)", "p95 ms",
                 f"img/s (batch {s['batch_size']})", "peak mem", "of peak"):
        table.add_column(name, justify="right")
    for m in result.measurements:
        paper_fl, paper_ms = paper_gflops(m), paper_latency(m)
        table.add_row(
            m.head.upper(), f"{m.resolution}²", f"{m.decoder_params / 1e6:.2f} M", f"{m.flops.decoder / 1e9:,.1f}",
            f"{m.flops.decoder_thop / 1e9:,.1f} ({f'{paper_fl:,.1f}' if paper_fl else '–'})",
            f"{m.latency.p50_ms:,.1f} ({f'{paper_ms:.2f}' if paper_ms else '–'})", f"{m.latency.p95_ms:,.1f}",
            f"{m.throughput:,.2f}",
            "–" if m.peak_memory_bytes is None else f"{m.peak_memory_bytes / 2**20:,.0f} MiB", f"{m.peak_ratio:.0%}",
        )
    return table


def print_targets(result: "BenchResult", console: "Console") -> None:
    """One line per target: met, not met or not measured, with the goal and the note."""
    from rich.markup import escape

    from anydepth_cli.bench.report import targets

    for t in targets(result):
        status = "[dim]not measured[/]" if t.met is None else "[green]met[/]" if t.met else "[red]not met[/]"
        measured = f" ({escape(t.measured)})" if t.measured else ""
        console.print(f"target {t.name}: {status}{measured}: {escape(t.goal)}; {escape(t.note)}", highlight=False)
