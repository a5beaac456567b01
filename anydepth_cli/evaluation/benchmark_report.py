"""The benchmark report in the paper's layout: per model, each set's AbsRel % and δ1 %, and the per-image CSV."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

from anydepth_cli.evaluation.benchmark_run import SetResult
from anydepth_cli.evaluation.failures import skipped_section
from anydepth_cli.evaluation.metrics import METRICS, aggregate
from anydepth_cli.io.writers import atomic_write, write_text

PER_IMAGE_CSV = "eval_per_image.csv"
TABLE_MARKDOWN = "eval_benchmarks.md"
TABLE_CSV = "eval_benchmarks.csv"
PER_IMAGE_COLUMNS: tuple[str, ...] = ("benchmark", "image", "depth", "model", *METRICS, "n_valid", "scale", "shift",
                                      "aligned_as")


def percentages(result: SetResult, model: str) -> tuple[float, float]:
    """The model's mean AbsRel and δ1 over the set's images, in percent (NaN when none was scored)."""
    means = aggregate(row for row in result.rows if row["model"] == model)
    return 100 * means["abs_rel"], 100 * means["delta1"]


def count_note(result: SetResult) -> str:
    """`654 images`, or `3 images (the standard set has 654)` when the count differs from the standard one."""
    standard = result.benchmark.standard_count
    text = f"{result.scored} image{'s' if result.scored != 1 else ''}"
    return text if result.scored == standard else f"{text} (the standard set has {standard})"


def table_cells(results: Sequence[SetResult], models: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """The paper's table as text: a header (model, then each set's AbsRel ↓ and δ1 ↑) and one row per model,
    one decimal, the best of each column in bold (`**…**`) when several models are compared."""
    header = ["Model"] + [f"{r.benchmark.title} {metric}" for r in results for metric in ("AbsRel ↓", "δ1 ↑")]
    values = [[value for r in results for value in percentages(r, model)] for model in models]
    best = []
    for column in range(len(header) - 1):
        finite = [row[column] for row in values if not math.isnan(row[column])]
        best.append((min if column % 2 == 0 else max)(finite) if len(finite) > 1 else None)
    rows = [[model] + ["–" if math.isnan(v) else f"**{v:.1f}**" if v == best[i] else f"{v:.1f}" for i, v in enumerate(row)]
            for model, row in zip(models, values)]
    return header, rows


def _markdown(results: Sequence[SetResult], models: Sequence[str], kinds: dict[str, str]) -> str:
    header, rows = table_cells(results, models)
    lines = [
        "# Zero-shot depth benchmarks",
        "",
        "AbsRel (%, lower is better) and δ1 (%, higher is better): the mean over each set's images of the "
        "per-image value after a least-squares scale-and-shift fit in the model's own space, scored as the "
        "field scores these sets (the protocol of Marigold's evaluation).",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
        "| Set | Images | Skipped | Tiled predictions | Time |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        speed = f"{r.seconds:.1f} s ({(r.scored + len(r.failures)) / r.seconds:.2f} img/s)" if r.seconds > 0 else "–"
        lines.append(f"| {r.benchmark.title} | {count_note(r)} | {len(r.failures)} | {r.tiled} | {speed} |")
    lines += ["", "Aligned as: " + ", ".join(f"{model} → {kinds[model]}" for model in models) + "."]
    lines += skipped_section([f"{r.benchmark.name} `{failure.input}`: {failure.reason}"
                              for r in results for failure in r.failures])
    return "\n".join(lines) + "\n"


def _write_table_csv(results: Sequence[SetResult], models: Sequence[str], temp: Path) -> None:
    """One row per model: each set's AbsRel % and δ1 % (full precision) and its image count."""
    columns = ["model"] + [f"{r.benchmark.name}_{c}" for r in results for c in ("abs_rel_pct", "delta1_pct", "images")]
    with open(temp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for model in models:
            writer.writerow([model] + [v for r in results for v in (*percentages(r, model), r.scored)])


def _write_per_image(results: Sequence[SetResult], temp: Path) -> None:
    with open(temp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=PER_IMAGE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for result in results:
            writer.writerows(result.rows)


def write_benchmark_report(results: Sequence[SetResult], models: Sequence[str], kinds: dict[str, str],
                           out_dir: Path) -> list[Path]:
    """Write `eval_benchmarks.md`, `eval_benchmarks.csv` and `eval_per_image.csv` into `out_dir`, each atomically."""
    paths = [out_dir / TABLE_MARKDOWN, out_dir / TABLE_CSV, out_dir / PER_IMAGE_CSV]
    write_text(paths[0], _markdown(results, models, kinds))
    atomic_write(paths[1], lambda temp: _write_table_csv(results, models, temp))
    atomic_write(paths[2], lambda temp: _write_per_image(results, temp))
    return paths
