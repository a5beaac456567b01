"""The bench report: `bench.md` (tables, the paper's figures beside ours), `bench.json`, `bench.png`.

The paper's figures (AnyDepth, DINOv3 ViT-L/16 on an H100) are kept here as data; targets the
run is checked against are evaluated here too, for whatever device ran.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anydepth_cli.bench.catalogue import BENCH_HEADS, DecoderParameters
from anydepth_cli.bench.suite import BenchResult, Measurement
from anydepth_cli.io.writers import atomic_write
from anydepth_cli.models.registry import DEFAULT_MODEL

PAPER_SETUP = "AnyDepth paper: DINOv3 ViT-L/16, H100, batch 1"
PAPER_LATENCY_MS = {"sdt": {256: 6.10, 512: 23.17, 1024: 93.09}, "dpt": {256: 6.66, 512: 24.65, 1024: 99.79}}
PAPER_GFLOPS = {"sdt": {256: 234.17, 512: 936.70, 1024: 3746.79}, "dpt": {256: 444.14, 512: 1776.56, 1024: 7106.22}}
"""Decoder GFLOPs by the paper's convention (PAPER_FLOP_CONVENTION): they scale exactly with the pixel count, so
they are the decoder's alone. All paper figures are keyed by bench head; `dav2-dpt` was not measured in the paper."""
PAPER_DECODER_PARAMS_M = {"sdt": {"dinov3-vits": 5.51, "dinov3-vitb": 9.45, "dinov3-vitl": 13.38},
                          "dpt": {"dinov3-vits": 50.83, "dinov3-vitb": 76.05, "dinov3-vitl": 99.58}}

REPRODUCED = 1e-3
"""Largest relative gap between our paper-convention count and the paper's figure that still reproduces it."""

CPU_TARGET_RATIOS = {"fp32": 0.75, "bf16": 0.55}
"""The share of the same run's matmul peak (in the run's precision) the default model reaches on the CPU."""
CPU_TARGET_RESOLUTION = 518
GPU_TARGET_MS = 25.0
GPU_TARGET_RESOLUTION = 1024

FILES = ("bench.md", "bench.json", "bench.png")


@dataclass(frozen=True)
class Target:
    """A performance target, whether this run measured it and whether it was met (None: not measured)."""

    name: str
    goal: str
    measured: str | None
    met: bool | None
    note: str


def targets(result: BenchResult) -> list[Target]:
    """The CPU matmul-ratio target and the GPU latency target, judged on this run's measurements."""
    device = result.settings["device"].split(":")[0]
    precision = result.settings["precision"]
    cpu_precision = precision if precision in CPU_TARGET_RATIOS else "fp32"
    cpu_ratio = CPU_TARGET_RATIOS[cpu_precision]
    cpu_goal = (f"{DEFAULT_MODEL} (SDT) at {CPU_TARGET_RESOLUTION}² in {cpu_precision} on the CPU reaches "
                f"≥ {cpu_ratio:.0%} of the {cpu_precision} matmul peak measured in the same run")
    cpu_run = (f"anydepth bench --device cpu --precision {cpu_precision} --encoder {DEFAULT_MODEL} --heads sdt "
               f"--resolution {CPU_TARGET_RESOLUTION}")
    cpu = _find(result, DEFAULT_MODEL, "sdt", CPU_TARGET_RESOLUTION)
    if device != "cpu":
        cpu_target = Target("cpu-matmul-ratio", cpu_goal, None, None, f"not measured: this run used {device}")
    elif cpu is None or precision != cpu_precision:
        cpu_target = Target("cpu-matmul-ratio", cpu_goal, None, None, f"not measured in this run: `{cpu_run}`")
    else:
        cpu_target = Target("cpu-matmul-ratio", cpu_goal, f"{cpu.peak_ratio:.1%}", cpu.peak_ratio >= cpu_ratio,
                            f"{cpu.achieved_flops / 1e9:.1f} GFLOP/s of {result.matmul_peak.flops_per_s / 1e9:.1f}")
    gpu_goal = (f"DINOv3 ViT-L/16 + SDT at {GPU_TARGET_RESOLUTION}², batch 1, bf16: ≤ {GPU_TARGET_MS:g} ms on an H100")
    gpu = _find(result, "dinov3-vitl", "sdt", GPU_TARGET_RESOLUTION)
    gpu_name = result.machine.get("gpu") or ""
    if device != "cuda":
        gpu_target = Target("gpu-latency", gpu_goal, None, None, f"not measured: no GPU in this run ({device})")
    elif gpu is None or not gpu.paper or gpu.batch_size != 1 or precision != "bf16":
        gpu_target = Target("gpu-latency", gpu_goal, None, None,
                            "not measured in this run: `anydepth bench --precision bf16 --batch-size 1 "
                            f"--resolution {GPU_TARGET_RESOLUTION}`")
    else:
        note = f"mean latency on {gpu_name}"
        if "H100" not in gpu_name:
            note += " (the target is set for an H100; judged here as measured)"
        gpu_target = Target("gpu-latency", gpu_goal, f"{gpu.latency.mean_ms:.2f} ms",
                            gpu.latency.mean_ms <= GPU_TARGET_MS, note)
    return [cpu_target, gpu_target]


def _find(result: BenchResult, encoder: str, head: str, resolution: int) -> Measurement | None:
    return next((m for m in result.measurements
                 if m.encoder == encoder and m.head == head and m.resolution == resolution), None)


def paper_latency(m: Measurement) -> float | None:
    """The paper's H100 latency (ms) for this configuration, if it is the paper's and listed."""
    return PAPER_LATENCY_MS[m.head].get(m.resolution) if m.paper else None


def paper_gflops(m: Measurement) -> float | None:
    """The paper's decoder GFLOPs for this configuration, if it is the paper's and listed."""
    return PAPER_GFLOPS[m.head].get(m.resolution) if m.paper else None


def paper_flop_ratios(result: BenchResult) -> dict[str, dict[str, float]]:
    """Per head: our decoder FLOPs by a correct count and by the paper's convention over the paper's figure,
    averaged over the paper-configuration measurements."""
    ratios: dict[str, dict[str, list[float]]] = {}
    for m in result.measurements:
        paper = paper_gflops(m)
        if paper:
            head = ratios.setdefault(m.head, {"correct": [], "paper_convention": []})
            head["correct"].append(m.flops.decoder / 1e9 / paper)
            head["paper_convention"].append(m.flops.decoder_thop / 1e9 / paper)
    return {head: {kind: sum(values) / len(values) for kind, values in kinds.items()}
            for head, kinds in ratios.items()}


def convention_note(head: str, ratios: dict[str, float]) -> str:
    """Whether our paper-convention count reproduces the paper's figures for `head`, and how a correct count differs."""
    label, ours, correct = BENCH_HEADS[head].label, ratios["paper_convention"], ratios["correct"]
    verdict = "the paper's figures reproduced" if abs(ours - 1) <= REPRODUCED else "NOT the paper's figures"
    return (f"{label}: by the paper's convention ours / paper = {ours:.4f}, {verdict}; by a correct count "
            f"ours / paper = {correct:.3f}.")


def head_pairs(result: BenchResult) -> dict[int, tuple[Measurement, Measurement]]:
    """(SDT, DPT) measurements at each resolution both heads were measured at."""
    by_key = {(m.head, m.resolution): m for m in result.measurements}
    return {r: (by_key["sdt", r], by_key["dpt", r]) for h, r in sorted(by_key, key=lambda k: k[1])
            if h == "sdt" and ("dpt", r) in by_key}


def cost_ratios(result: BenchResult) -> dict[int, dict[str, float]]:
    """DPT's decoder FLOPs over SDT's at each resolution both were measured at, by a correct count and by the
    paper's convention."""
    return {r: {"correct": dpt.flops.decoder / sdt.flops.decoder,
                "paper_convention": dpt.flops.decoder_thop / sdt.flops.decoder_thop}
            for r, (sdt, dpt) in head_pairs(result).items()}


def _times(ratios: dict[int, float]) -> str:
    """`1.32×`, or one figure per resolution when they differ at two decimals."""
    figures = [f"{v:.2f}×" for v in ratios.values()]
    if len(set(figures)) == 1:
        return figures[0]
    return " / ".join(figures) + " at " + " / ".join(f"{r}²" for r in ratios)


def cost_paragraph(result: BenchResult) -> str | None:
    """What DPT's decoder costs in SDTs by a correct count against what the paper's convention suggests (None
    unless both heads were measured at some resolution)."""
    ratios = cost_ratios(result)
    if not ratios:
        return None
    correct = _times({r: v["correct"] for r, v in ratios.items()})
    paper = _times({r: v["paper_convention"] for r, v in ratios.items()})
    return (f"By a correct count DPT's decoder costs {correct} SDT's, not the {paper} the paper's convention "
            "suggests: thop counts a transposed convolution by its output size, 16× the work of DPT's 4×4 "
            "stride-4 resize and 4× that of its 2×2 stride-2 one, and SDT, which upsamples by point sampling, "
            "has none.")


def to_json(result: BenchResult) -> dict[str, Any]:
    """Every number of the run, the machine and the paper's figures, as JSON-ready data."""
    return {
        "started": result.started, "seconds": result.seconds, "machine": result.machine,
        "settings": result.settings, "flop_convention": result.flop_convention,
        "paper_flop_convention": result.paper_flop_convention,
        "memory": result.memory, "matmul_peak": asdict(result.matmul_peak),
        "measurements": [m.to_dict() | {"paper_latency_ms": paper_latency(m), "paper_decoder_gflops": paper_gflops(m)}
                         for m in result.measurements],
        "decoder_parameters": [asdict(p) | {"reduction": p.reduction,
                                            "paper_sdt_m": PAPER_DECODER_PARAMS_M["sdt"][p.encoder],
                                            "paper_dpt_m": PAPER_DECODER_PARAMS_M["dpt"][p.encoder]}
                               for p in result.parameters],
        "decoder_flop_ratio_to_paper": paper_flop_ratios(result),
        "dpt_over_sdt_decoder_flops": {str(r): v for r, v in cost_ratios(result).items()},
        "paper": {"setup": PAPER_SETUP, "latency_ms": PAPER_LATENCY_MS, "decoder_gflops": PAPER_GFLOPS,
                  "decoder_params_m": PAPER_DECODER_PARAMS_M},
        "targets": [asdict(t) for t in targets(result)],
    }


def _num(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _mib(value: int | None) -> str:
    return "–" if value is None else f"{value / 2**20:,.0f} MiB"


def _status(target: Target) -> str:
    return "not measured" if target.met is None else "met" if target.met else "NOT met"


def _reduction(sdt: float, dpt: float) -> str:
    return f"{1 - sdt / dpt:.1%}"


def markdown(result: BenchResult) -> str:
    """The report as Markdown."""
    s, machine, peak = result.settings, result.machine, result.matmul_peak
    lines = [
        "# anydepth bench: SDT vs DPT",
        "",
        f"{result.started} · anydepth-cli {machine['anydepth_cli']} · torch {machine['torch']} · "
        f"{result.seconds:.0f} s",
        "",
        f"- Machine: {machine['cpu']} ({machine['cpu_count']} CPUs, {machine['torch_threads']} torch threads)"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else ""),
        f"- Device {s['device']}, precision {s['precision']}, batch {s['batch_size']}, "
        f"compile {'on' if s['compile'] else 'off'}, warm-up {s['warmup']}, "
        f"runs {s['runs'] if s['runs'] is not None else 'auto'}, weights {s['weights']}",
        f"- Matmul peak: {peak.flops_per_s / 1e9:,.1f} GFLOP/s ({peak.dtype} {peak.size}×{peak.size}, "
        + ("the faster of " if len(peak.kernels) > 1 else "") + " and ".join(f"`{k}`" for k in peak.kernels)
        + f", 2n³ FLOPs; best of {len(peak.samples)} probes, one before each configuration and one after the last: "
        + ", ".join(f"{v / 1e9:,.1f}" for v in peak.samples) + ")",
        "",
        "## Results",
        "",
        "| model | input | decoder params | total params | GFLOPs | decoder GFLOPs | decoder GFLOPs (paper conv.) "
        "| paper decoder GFLOPs | decoder share | latency (ms) | paper ms (H100) | p50 | p95 | runs | img/s "
        "| peak memory | achieved GFLOP/s (p50) | of matmul peak |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for m in result.measurements:
        lat = m.latency
        lines.append(
            f"| {m.label} | {m.resolution}² | {m.decoder_params / 1e6:.2f} M | {m.total_params / 1e6:.2f} M "
            f"| {m.flops.total / 1e9:,.2f} | {m.flops.decoder / 1e9:,.2f} | {m.flops.decoder_thop / 1e9:,.3f} "
            f"| {_num(paper_gflops(m))} "
            f"| {m.decoder_share:.1%} | {lat.mean_ms:,.2f} ± {lat.std_ms:,.2f} | {_num(paper_latency(m))} "
            f"| {lat.p50_ms:,.2f} | {lat.p95_ms:,.2f} | {lat.runs} | {m.throughput:,.2f} | {_mib(m.peak_memory_bytes)} "
            f"| {m.achieved_flops / 1e9:,.1f} | {m.peak_ratio:.1%} |"
        )
    captured = sum(m.capture_seconds for m in result.measurements)
    lines += ["", "Latency: mean ± std of `runs` timed forwards of one image after the warm-up, through the forward "
              "`anydepth predict` runs (CUDA graphs on CUDA); throughput = batch / mean latency of a batch of "
              "`--batch-size`; achieved FLOP/s = counted FLOPs of a batch / its p50 latency (the median: robust to "
              "forwards slowed by other processes), compared with the matmul peak. Peak memory: "
              + result.memory + "."
              + (f" CUDA graphs were captured in {captured:.2f} s in all, apart from the timings." if captured else "")]
    lines += _comparison(result)
    lines += _parameter_section(result.parameters)
    lines += ["", "## FLOP counting", "", "Correct count: " + result.flop_convention + ".", "",
              "Paper's convention: " + result.paper_flop_convention + "."]
    ratios = paper_flop_ratios(result)
    if ratios:
        lines += ["", "Against the paper's decoder FLOPs (" + PAPER_SETUP + "):", ""]
        lines += [f"- {convention_note(head, ratio)}" for head, ratio in ratios.items()]
    lines += ["", "## Targets", "", "| target | goal | measured | status | note |", "|---|---|--:|---|---|"]
    for t in targets(result):
        lines.append(f"| {t.name} | {t.goal} | {t.measured or '–'} | {_status(t)} | {t.note} |")
    return "\n".join(lines) + "\n"


def _comparison(result: BenchResult) -> list[str]:
    """SDT against DPT at each resolution both were measured at, with the paper's ratios."""
    pairs = head_pairs(result)
    if not pairs:
        return []
    lines = ["", "## SDT vs DPT", "",
             "| input | SDT ms | DPT ms | DPT/SDT latency | paper DPT/SDT latency | SDT decoder GFLOPs "
             "| DPT decoder GFLOPs | DPT/SDT decoder FLOPs | SDT decoder GFLOPs (paper conv.) "
             "| DPT decoder GFLOPs (paper conv.) | DPT/SDT (paper conv.) | paper DPT/SDT decoder FLOPs |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r, (sdt, dpt) in pairs.items():
        paper_ms = (paper_latency(sdt), paper_latency(dpt))
        paper_fl = (paper_gflops(sdt), paper_gflops(dpt))
        lines.append(
            f"| {r}² | {sdt.latency.mean_ms:,.2f} | {dpt.latency.mean_ms:,.2f} "
            f"| {dpt.latency.mean_ms / sdt.latency.mean_ms:.3f} "
            f"| {_num(paper_ms[1] / paper_ms[0] if all(paper_ms) else None, 3)} "
            f"| {sdt.flops.decoder / 1e9:,.2f} | {dpt.flops.decoder / 1e9:,.2f} "
            f"| {dpt.flops.decoder / sdt.flops.decoder:.3f} "
            f"| {sdt.flops.decoder_thop / 1e9:,.3f} | {dpt.flops.decoder_thop / 1e9:,.3f} "
            f"| {dpt.flops.decoder_thop / sdt.flops.decoder_thop:.3f} "
            f"| {_num(paper_fl[1] / paper_fl[0] if all(paper_fl) else None, 3)} |"
        )
    paragraph = cost_paragraph(result)
    return lines + (["", paragraph] if paragraph else [])


def _parameter_section(parameters: list[DecoderParameters]) -> list[str]:
    lines = ["", "## Decoder parameters", "",
             "SDT: 256 fusion channels, cls readout, detail enhancer. DPT: the paper's, DINOv3's DPT head with "
             "512 features, post-process channels C, C, C, C (C the encoder width), cls readout and BatchNorm on the "
             "tapped layers. Counted from our modules; the paper's figures beside them.",
             "", "| encoder | SDT | DPT | SDT saves | paper SDT | paper DPT | paper SDT saves |",
             "|---|--:|--:|--:|--:|--:|--:|"]
    for p in parameters:
        paper_sdt, paper_dpt = PAPER_DECODER_PARAMS_M["sdt"][p.encoder], PAPER_DECODER_PARAMS_M["dpt"][p.encoder]
        lines.append(f"| {p.encoder} | {p.sdt:,} ({p.sdt / 1e6:.2f} M) | {p.dpt:,} ({p.dpt / 1e6:.2f} M) "
                     f"| {p.reduction:.1%} | {paper_sdt:.2f} M | {paper_dpt:.2f} M | {_reduction(paper_sdt, paper_dpt)} |")
    return lines


def write_plot(result: BenchResult, path: Path) -> None:
    """Latency and GFLOPs by resolution for each measured head, SDT against the paper's DPT: total and decoder
    FLOPs by a correct count, the decoder's by the paper's convention, and the paper's figures (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.8), layout="constrained")
    latency_axes, flops_axes = figure.subplots(1, 2)
    colours = {"sdt": "tab:blue", "dpt": "tab:orange", "dav2-dpt": "tab:green", "vggt-dpt": "tab:red"}
    for head in BENCH_HEADS:
        points = sorted((m for m in result.measurements if m.head == head), key=lambda m: m.resolution)
        if not points:
            continue
        xs = [m.resolution for m in points]
        colour, name = colours[head], head.upper()
        latency_axes.errorbar(xs, [m.latency.mean_ms for m in points], yerr=[m.latency.std_ms for m in points],
                              marker="o", color=colour, label=f"{name} (this run)", capsize=3)
        flops_axes.plot(xs, [m.flops.total / 1e9 for m in points], marker="o", color=colour, label=f"{name} total")
        flops_axes.plot(xs, [m.flops.decoder / 1e9 for m in points], marker="s", color=colour, alpha=0.6,
                        linestyle=":", label=f"{name} decoder")
        flops_axes.plot(xs, [m.flops.decoder_thop / 1e9 for m in points], marker="^", color=colour, alpha=0.6,
                        linestyle="-.", label=f"{name} decoder, paper's convention")
        paper = [(m.resolution, paper_latency(m), paper_gflops(m)) for m in points if paper_latency(m)]
        if paper:
            latency_axes.plot([p[0] for p in paper], [p[1] for p in paper], marker="x", linestyle="--",
                              color=colour, label=f"{name} (paper, H100)")
            flops_axes.plot([p[0] for p in paper], [p[2] for p in paper], marker="x", linestyle="--",
                            color=colour, label=f"{name} decoder (paper)")
    resolutions = sorted({m.resolution for m in result.measurements})
    for axes, title, unit in ((latency_axes, "Latency per batch", "ms"), (flops_axes, "FLOPs per image", "GFLOPs")):
        axes.set_title(title)
        axes.set_xlabel("input side (px)")
        axes.set_ylabel(unit)
        axes.set_xscale("log", base=2)
        axes.set_xticks(resolutions, [str(r) for r in resolutions], minor=False)
        axes.set_xticks([], minor=True)
        axes.set_yscale("log")
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="x-small")
    figure.suptitle(f"SDT vs the paper's DPT · {result.settings['device']} · {result.settings['precision']}")
    atomic_write(path, lambda temp: figure.savefig(temp, format="png", dpi=110))


def write_report(result: BenchResult, folder: Path) -> list[Path]:
    """Write bench.md, bench.json and bench.png into `folder`; returns their paths."""
    folder = Path(folder)
    md, js, png = (folder / name for name in FILES)
    atomic_write(md, lambda temp: temp.write_text(markdown(result)))
    atomic_write(js, lambda temp: temp.write_text(json.dumps(to_json(result), indent=2) + "\n"))
    write_plot(result, png)
    return [md, js, png]
