"""`anydepth doctor`: what this installation can do (torch build, devices, Hub cache, video writing)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from anydepth_cli.cli.console import out


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
        "hub_cache": str(cache_dir()),
        "offline": offline_mode(),
        "cached_models": models,
        "mp4_writer": _video_writable(),
    }


def doctor(json_output: Annotated[bool, typer.Option("--json", help="Print the facts as JSON.")] = False) -> None:
    """Show the torch build, devices, Hub cache and cached models, offline mode and video support."""
    from rich.table import Table

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
    table.add_row("Hub cache", facts["hub_cache"])
    table.add_row("offline mode", "on (HF_HUB_OFFLINE)" if facts["offline"] else "off")
    cached = [f"{name} ({info['bytes'] / 2**20:.0f} MB)" for name, info in facts["cached_models"].items()]
    table.add_row("cached models", "\n".join(cached) or "none")
    table.add_row("mp4 writing", "yes (mp4v)" if facts["mp4_writer"] else "no: videos fall back to PNG sequences")
    out.print(table)
