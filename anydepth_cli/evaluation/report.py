"""Evaluation reports: per-image CSV, Markdown summary table and a per-image AbsRel plot, written atomically."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from anydepth_cli.evaluation.failures import skipped_section
from anydepth_cli.evaluation.folder_run import EvalResult
from anydepth_cli.evaluation.metrics import HIGHER_IS_BETTER, METRICS
from anydepth_cli.io.writers import atomic_write

CSV_NAME = "eval_per_image.csv"
MARKDOWN_NAME = "eval_summary.md"
PLOT_NAME = "eval_abs_rel.png"
CSV_COLUMNS: tuple[str, ...] = ("image", "depth", "model", *METRICS, "n_valid", "scale", "shift", "aligned_as", "kind_source")
LABELS: dict[str, str] = {"abs_rel": "AbsRel", "delta1": "δ1", "delta2": "δ2", "delta3": "δ3", "rmse": "RMSE"}
KIND_CHECK_COLUMNS: tuple[str, ...] = (
    "Model", "Declared", "AbsRel as depth", "AbsRel as disparity", "Ratio", "Supported", "Agrees",
)


def _write_csv(result: EvalResult, temp: Path) -> None:
    with open(temp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(result.rows)


def _write_text(temp: Path, text: str) -> None:
    temp.write_text(text, encoding="utf-8")


def _format_ratio(ratio: float) -> str:
    """`12.34×`, `∞`, or `–` when undecided."""
    if math.isnan(ratio):
        return "–"
    return "∞" if math.isinf(ratio) else f"{ratio:.2f}×"


def kind_check_rows(result: EvalResult) -> list[tuple[str, ...]]:
    """The output kind check as text cells under KIND_CHECK_COLUMNS, one row per model aligned both ways."""
    rows = []
    for model in result.models:
        alignment = result.alignments[model]
        check = alignment.check
        if check is None:
            continue
        agrees = "–" if check.detected is None else "yes" if alignment.agrees else "no"
        rows.append((model, alignment.declared, f"{check.abs_rel_depth:.4f}", f"{check.abs_rel_disparity:.4f}",
                     _format_ratio(check.ratio), check.detected or "–", agrees))
    return rows


def _kind_check_lines(result: EvalResult) -> list[str]:
    """The output kind check section, or no lines when no model was aligned both ways."""
    rows = kind_check_rows(result)
    if not rows:
        return []
    lines = [
        "",
        "## Output kind check",
        "",
        "AbsRel of each model's predictions aligned as depth and as disparity; the lower one tells the kind "
        "the data supports, and the ratio by how much.",
        "",
        "| " + " | ".join(KIND_CHECK_COLUMNS) + " |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _markdown(result: EvalResult) -> str:
    """Aggregate table (one row per model, best value per metric in bold), the output kind check and the skipped samples."""
    n_images = len({row["image"] for row in result.rows})
    lines = [
        f"# Depth evaluation: preset `{result.preset}`",
        "",
        f"{n_images} image(s) scored, {len(result.failures)} skipped. Each metric is the mean over images "
        "of the per-image value after least-squares scale-and-shift alignment in the model's space "
        "(Aligned as: depth or disparity, and whether declared by the model, given by --output-kind or "
        "detected from the data). AbsRel and RMSE: lower is better; δ1–δ3: higher is better.",
        "",
        "| Model | Images | Aligned as | " + " | ".join(f"{LABELS[m]} {'↑' if m in HIGHER_IS_BETTER else '↓'}" for m in METRICS) + " |",
        "|---|---:|---|" + "---:|" * len(METRICS),
    ]
    best: dict[str, float] = {}
    for metric in METRICS:
        values = [agg[metric] for agg in result.aggregates.values() if not math.isnan(agg[metric])]
        if len(values) > 1:
            best[metric] = max(values) if metric in HIGHER_IS_BETTER else min(values)
    for model in result.models:
        agg = result.aggregates[model]
        cells = []
        for metric in METRICS:
            text = f"{agg[metric]:.4f}"
            cells.append(f"**{text}**" if best.get(metric) == agg[metric] else text)
        lines.append(f"| {model} | {int(agg['n_images'])} | {result.alignments[model].label} | " + " | ".join(cells) + " |")
    lines += _kind_check_lines(result)
    lines += skipped_section([f"`{failure.input}`: {failure.reason}" for failure in result.failures])
    return "\n".join(lines) + "\n"


def _plot(result: EvalResult, temp: Path) -> None:
    """AbsRel per image (x = image index in evaluation order), one line per model."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    order = list(dict.fromkeys(str(row["image"]) for row in result.rows))
    position = {image: i for i, image in enumerate(order)}
    fig = Figure(figsize=(10, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for model in result.models:
        rows = [row for row in result.rows if row["model"] == model]
        ax.plot(
            [position[str(r["image"])] for r in rows],
            [r["abs_rel"] for r in rows],
            marker="o",
            markersize=3,
            linewidth=1,
            label=model,
        )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("image index")
    ax.set_ylabel("AbsRel")
    ax.set_title(f"AbsRel per image (preset {result.preset})")
    ax.grid(alpha=0.3)
    if result.models:
        ax.legend()
    fig.tight_layout()
    fig.savefig(temp, format="png")


def write_eval_report(result: EvalResult, out_dir: str | Path) -> list[Path]:
    """Write `eval_per_image.csv`, `eval_summary.md` and `eval_abs_rel.png` into `out_dir`; return their paths.

    The folder is created if needed and each file is replaced atomically; OutputError if one cannot be written.
    """
    out = Path(out_dir)
    csv_path, md_path, png_path = out / CSV_NAME, out / MARKDOWN_NAME, out / PLOT_NAME
    atomic_write(csv_path, lambda temp: _write_csv(result, temp))
    text = _markdown(result)
    atomic_write(md_path, lambda temp: _write_text(temp, text))
    atomic_write(png_path, lambda temp: _plot(result, temp))
    return [csv_path, md_path, png_path]
