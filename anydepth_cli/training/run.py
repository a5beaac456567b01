"""The run folder: what a training run writes and how it is read back for --resume.

- `arch.json`: the trained network's architecture (`output` = the target, layout `anydepth-train`);
- `model.pth`: the full state dict in the AnyDepth training layout (`0.encoder.backbone.*` / `0.decoder.*`),
  loadable with `--checkpoint RUN/model.pth --arch RUN/arch.json`;
- `last.pth`: the head's weights, the optimizer, scheduler and gradient-scaler states, the RNG states, the
  step and the architecture (the frozen encoder is read back from `model.pth`);
- `metrics.csv`: step, loss, lr, val AbsRel and δ1; `loss.png`: the curves;
- `dropped.txt`: the samples --keep left out, `skipped.txt`: the unreadable ones with the reason, each in a
  section per source (a `# SOURCE: N of FOUND` line, then one sample a line).

Every file is written to a temporary name and renamed into place, so a kill leaves the previous version.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any

import torch

from anydepth_cli.errors import CheckpointError, UsageError
from anydepth_cli.io.writers import atomic_write, write_text
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import DepthNetwork
from anydepth_cli.weights.checkpoint import state_in_layout

ARCH = "arch.json"
MODEL = "model.pth"
LAST = "last.pth"
METRICS = "metrics.csv"
PLOT = "loss.png"
DROPPED = "dropped.txt"
SKIPPED = "skipped.txt"
METRIC_FIELDS = ("step", "loss", "lr", "val_abs_rel", "val_delta1")
TRAIN_LAYOUT = "anydepth-train"


def write_arch(folder: Path, config: NetworkConfig) -> Path:
    """`arch.json` describing `config`."""
    path = folder / ARCH
    write_text(path, json.dumps(config.to_dict(), indent=1) + "\n")
    return path


def _save(obj: Any, path: Path) -> None:
    def write(temp: Path) -> None:
        with open(temp, "wb") as handle:
            torch.save(obj, handle)
    atomic_write(path, write, fsync=True)


def save_model(folder: Path, network: DepthNetwork) -> Path:
    """`model.pth`: every weight of `network` in the AnyDepth training layout."""
    path = folder / MODEL
    _save(state_in_layout(network, TRAIN_LAYOUT), path)
    return path


def save_last(folder: Path, state: dict[str, Any]) -> Path:
    """`last.pth`: the resumable training state."""
    path = folder / LAST
    _save(state, path)
    return path


def load_last(folder: Path) -> dict[str, Any]:
    """The training state in `folder/last.pth`; UsageError when the folder holds no resumable run."""
    path = folder / LAST
    if not path.is_file() or not (folder / MODEL).is_file():
        raise UsageError(f"{folder} holds no resumable run (it needs {LAST} and {MODEL})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many unrelated types for damaged files
        raise CheckpointError(f"cannot read {path}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") from None
    if not isinstance(state, dict) or not {"step", "arch", "head", "optimizer"} <= set(state):
        raise CheckpointError(f"{path} is not a training state written by anydepth train")
    return state


def write_metrics(folder: Path, rows: list[dict[str, float]]) -> Path:
    """`metrics.csv`, one row per step (validation columns empty between validations)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v)
                         for k, v in row.items() if k in METRIC_FIELDS})
    path = folder / METRICS
    write_text(path, buffer.getvalue())
    return path


def read_metrics(folder: Path, up_to: int) -> list[dict[str, float]]:
    """The rows of `metrics.csv` up to step `up_to` (none if the file is missing)."""
    path = folder / METRICS
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            row = {k: (float(v) if v else math.nan) for k, v in raw.items() if k in METRIC_FIELDS}
            if row.get("step", math.inf) <= up_to:
                row["step"] = int(row["step"])
                rows.append(row)
    return rows


def plot_losses(folder: Path, rows: list[dict[str, float]]) -> Path:
    """`loss.png`: the training loss (and its running mean) by step, with the validation AbsRel when there is one."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps = [row["step"] for row in rows]
    losses = [row["loss"] for row in rows]
    window = max(1, len(rows) // 50)
    smooth = [sum(losses[max(0, i - window + 1): i + 1]) / len(losses[max(0, i - window + 1): i + 1]) for i in range(len(losses))]
    fig = Figure(figsize=(8, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(steps, losses, color="C0", alpha=0.3, linewidth=0.8, label="loss")
    ax.plot(steps, smooth, color="C0", linewidth=1.5, label=f"loss, mean of {window}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    if losses and min(losses) > 0:
        ax.set_yscale("log")
    validated = [(row["step"], row["val_abs_rel"]) for row in rows if not math.isnan(row.get("val_abs_rel", math.nan))]
    if validated:
        other = ax.twinx()
        other.plot(*zip(*validated), color="C3", marker="o", label="val AbsRel")
        other.set_ylabel("val AbsRel", color="C3")
    ax.legend(loc="upper right")
    fig.tight_layout()
    path = folder / PLOT
    atomic_write(path, lambda temp: fig.savefig(temp, format="png"))
    return path
