"""`anydepth doctor`: what this installation can do (torch build, devices, Hub cache, video writing), and with `--check` whether a model behaves as declared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from anydepth_cli.cli.console import out
from anydepth_cli.errors import UsageError

CHECK = "Model check"


def _video_writable() -> bool:
    """Whether OpenCV can encode an mp4 file here."""
    import tempfile
    from pathlib import Path

    import cv2
    import numpy as np

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "probe.mp4"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (32, 32))
        if not writer.isOpened():
            return False
        for _ in range(3):
            writer.write(np.zeros((32, 32, 3), dtype=np.uint8))
        writer.release()
        return path.is_file() and path.stat().st_size > 0


def collect() -> dict[str, Any]:
    """Every fact the report shows, as plain data."""
    import platform

    import torch

    from anydepth_cli import __version__
    from anydepth_cli.inference.precision import choose_precision, cpu_bf16_instructions
    from anydepth_cli.io.encoders import pyav_missing
    from anydepth_cli.weights.hub import cache_dir, cached_path, offline_mode
    from anydepth_cli.models.registry import MODELS

    cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    models = {}
    for spec in MODELS.values():
        path = cached_path(spec.repo_id, spec.filename)
        if path is not None:
            models[spec.name] = {"path": str(path), "bytes": path.stat().st_size}
    return {
        "anydepth": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cuda_devices": cuda,
        "mps": torch.backends.mps.is_available(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_bf16": cpu_bf16_instructions(),
        "cpu_precision": {"auto": (choice := choose_precision("auto", torch.device("cpu"))).name,
                          "reason": choice.reason},
        "hub_cache": str(cache_dir()),
        "offline": offline_mode(),
        "cached_models": models,
        "mp4_writer": _video_writable(),
        "h264_writer": pyav_missing("h264") is None,
        "ffv1_writer": pyav_missing("ffv1") is None,
    }


def doctor(
    json_output: Annotated[bool, typer.Option("--json", help="Print the facts as JSON.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Run a model on the bundled sample photo and check that its output behaves as its declared kind and activation say.", rich_help_panel=CHECK)] = False,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Registry model to check. \\[default: anydepth-dav2-vitb]", show_default=False, rich_help_panel=CHECK)] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="Your own .pth/.safetensors weights to check: a file, or hf://ORG/REPO/FILE on the Hub.", rich_help_panel=CHECK)] = None,
    arch: Annotated[Optional[Path], typer.Option(help="JSON architecture of --checkpoint (a fixture .json works as is).", rich_help_panel=CHECK)] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Size the network sees, in pixels: the shorter side for Depth Anything V2's pipeline, the longer for Depth Anything 3's (see `models info`). \\[default: the model's]", show_default=False, rich_help_panel=CHECK)] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel=CHECK)] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32, fp16 or bf16.", rich_help_panel=CHECK)] = "auto",
) -> None:
    """Show the torch build, devices, Hub cache and cached models, offline mode and video support; with --check, test a model on the sample photo."""
    if check:
        _report_check(model, checkpoint, arch, input_size, device, precision, json_output)
        return
    if (model, checkpoint, arch, input_size) != (None, None, None, None) or (device, precision) != ("auto", "auto"):
        raise UsageError("--model, --checkpoint, --arch, --input-size, --device and --precision go with --check")
    _show_installation(json_output)


def _report_check(model: str | None, checkpoint: str | None, arch: Path | None, input_size: int | None, device: str,
                precision: str, json_output: bool) -> None:
    """Print one line per fact and a verdict for the chosen weights; exit 1 when a fact fails."""
    from rich.markup import escape

    from anydepth_cli.weights.choice import choose_weights

    choice = choose_weights(model, checkpoint, arch)  # a bad choice is reported before torch is imported
    from anydepth_cli.evaluation.sanity import check_model, override_hint
    from anydepth_cli.pipelines.runtime import open_predictor

    predictor, label = open_predictor(model, checkpoint, arch, device, precision, batch_size=2, input_size=input_size)
    report = check_model(predictor, choice.config.activation)
    weights = checkpoint or f"hf://{choice.repo_id}/{choice.filename}"
    hint = override_hint(choice.config, arch, weights) if report.inverted else None
    if json_output:
        out.print_json(json.dumps({
            "model": label, "output": report.output_kind, "activation": choice.config.activation,
            "passed": report.passed, "verdict": report.verdict, "inverted": report.inverted, "hint": hint,
            "facts": [{"name": f.name, "passed": f.passed, "figure": f.figure} for f in report.facts],
        }))
    else:
        out.print(f"checking {escape(label)}: declared {report.output_kind}, activation {choice.config.activation}, "
                  f"on the sample photo", highlight=False, soft_wrap=True)
        width = max(len(fact.name) for fact in report.facts)
        for fact in report.facts:
            mark = "[green]pass[/]" if fact.passed else "[bold red]FAIL[/]"
            out.print(f"{mark}  {fact.name:<{width}}  {escape(fact.figure)}", highlight=False, soft_wrap=True)
        out.print(f"verdict: {escape(report.verdict)}", highlight=False, soft_wrap=True)
        if hint:
            out.print(f"hint: {escape(hint)}", highlight=False, soft_wrap=True)
    if not report.passed:
        raise typer.Exit(1)


def _show_installation(json_output: bool) -> None:
    """Print the installation report as a table, or as JSON."""
    from rich.table import Table

    from anydepth_cli.io.encoders import pyav_missing

    facts = collect()
    if json_output:
        out.print_json(json.dumps(facts))
        return
    table = Table(title="anydepth doctor", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_row("anydepth", facts["anydepth"])
    table.add_row("python", facts["python"])
    table.add_row("torch", f"{facts['torch']} ({'CUDA ' + facts['torch_cuda'] if facts['torch_cuda'] else 'CPU build'})")
    table.add_row("CUDA devices", ", ".join(facts["cuda_devices"]) or "none")
    table.add_row("MPS", "yes" if facts["mps"] else "no")
    table.add_row("CPU threads", f"{facts['cpu_threads']} ({facts['cpu']})")
    precision = facts["cpu_precision"]
    reason = precision["reason"].removeprefix("auto: ")
    table.add_row("CPU precision", f"--precision auto runs {precision['auto']} ({reason})")
    table.add_row("Hub cache", facts["hub_cache"])
    table.add_row("offline mode", "on (HF_HUB_OFFLINE)" if facts["offline"] else "off")
    cached = [f"{name} ({info['bytes'] / 2**20:.0f} MB)" for name, info in facts["cached_models"].items()]
    table.add_row("cached models", "\n".join(cached) or "none")
    table.add_row("mp4 writing", "yes (mp4v)" if facts["mp4_writer"] else "no: videos fall back to PNG sequences")
    for codec, name in (("h264", "H.264"), ("ffv1", "FFV1")):
        table.add_row(f"{name} writing", "yes (PyAV)" if facts[f"{codec}_writer"] else f"no: {pyav_missing(codec)}")
    out.print(table)
