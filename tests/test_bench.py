"""`anydepth bench`: exact parameter counts, the FLOP convention, report structure and targets (tiny sizes, no timing)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

from anydepth_cli.bench import measure, report
from anydepth_cli.bench.catalogue import (BENCH_HEADS, decoder_parameter_table, dinov3_config, head_parameters,
                                          resolve_models)
from anydepth_cli.bench.flops import FlopCount, ThopCounter, count_flops, module_flops
from anydepth_cli.bench.measure import Latency, MatmulPeak, percentile
from anydepth_cli.bench.suite import BenchResult, BenchSettings, Measurement, run_bench
from anydepth_cli.cli.bench import bench
from anydepth_cli.errors import UsageError
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import build_network
from anydepth_cli.models.registry import DEFAULT_MODEL, MODELS, VIT_B, VIT_L, VIT_S

TINY = NetworkConfig(embed=32, depth=4, heads=2, layers=(0, 1, 2, 3), head="sdt", fusion=16, cls=True,
                     detail_enhancer=True)

DAV2_DPT_FIXED = 28_063_425
"""DAv2 DPT-256 head parameters that do not depend on the encoder width C (the four 1×1 projections add 2816·C):
transposed 4×/2× resizes 1,048,832 + 1,049,088, stride-2 conv 9,438,208, layer_rn convs 6,488,064,
four fusion blocks 4 × 2,426,112, output convs 295,040 + 36,896 + 33, projection biases 2816."""


def paper_dpt_parameters(width: int) -> int:
    """The paper's DPT-512 head on an encoder of `width` C (architecture.md): 41·C² + 18,451·C + 37,694,273."""
    return 41 * width**2 + 18_451 * width + 37_694_273


PAPER_CONVENTION_GFLOPS = {"sdt": (234.176, 936.704, 3746.816), "dpt": (444.139, 1776.556, 7106.225)}
CORRECT_GFLOPS = {"sdt": (233.85, 935.42, 3741.67), "dpt": (308.84, 1235.36, 4941.43)}
"""Decoder GFLOPs of the paper's heads on DINOv3 ViT-L/16 at 256², 512², 1024² (architecture.md)."""


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tiny networks on a busy shared CPU: one thread avoids OpenMP stalls; small matmul peak."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setitem(measure.MATMUL_SIZE, "cpu", 128)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("size,sdt,dpt,dav2", [(VIT_S, 5_517_381, 50_825_153, 29_144_769),
                                               (VIT_B, 9_451_077, 76_047_425, 30_226_113),
                                               (VIT_L, 13_384_261, 99_579_713, 30_947_009)])
def test_bench_head_parameter_counts(size, sdt, dpt, dav2):
    assert head_parameters(dinov3_config(size, "sdt"))[0] == sdt
    assert head_parameters(dinov3_config(size, "dpt"))[0] == dpt == paper_dpt_parameters(size["embed"])
    assert head_parameters(dinov3_config(size, "dav2-dpt"))[0] == dav2 == DAV2_DPT_FIXED + 2816 * size["embed"]


def test_decoder_parameter_table_is_sdt_against_the_papers_dpt():
    rows = {p.encoder: (p.sdt, p.dpt, round(p.reduction, 3)) for p in decoder_parameter_table()}
    assert rows == {"dinov3-vits": (5_517_381, 50_825_153, 0.891), "dinov3-vitb": (9_451_077, 76_047_425, 0.876),
                    "dinov3-vitl": (13_384_261, 99_579_713, 0.866)}
    for p in decoder_parameter_table():
        assert round(p.dpt / 1e6, 2) == report.PAPER_DECODER_PARAMS_M["dpt"][p.encoder]
        assert round(p.sdt / 1e6, 2) == pytest.approx(report.PAPER_DECODER_PARAMS_M["sdt"][p.encoder], abs=0.01)


def test_bench_heads_map_to_architecture_heads():
    assert {name: (h.architecture, h.label, h.paper) for name, h in BENCH_HEADS.items()} == {
        "sdt": ("sdt", "SDT-256", True), "dpt": ("dpt-dinov3", "DPT-512 (paper)", True),
        "dav2-dpt": ("dpt", "DAv2 DPT-256", False), "vggt-dpt": ("dpt-vggt", "VGGT DPT-256", False)}
    dpt = dinov3_config(VIT_B, "dpt")
    assert (dpt.head, dpt.features, dpt.out_channels, dpt.cls, dpt.batchnorm, dpt.outputs) == (
        "dpt-dinov3", 512, (768,) * 4, True, True, 1)
    dav2 = dinov3_config(VIT_B, "dav2-dpt")
    assert (dav2.head, dav2.features, dav2.out_channels, dav2.cls) == ("dpt", 256, (256, 512, 1024, 1024), False)


def test_total_parameters_count_encoder_and_head():
    network = build_network(TINY, "meta")
    encoder = sum(p.numel() for p in network.encoder.parameters())
    decoder, total = head_parameters(TINY)
    assert total == encoder + decoder and decoder == sum(p.numel() for p in network.head.parameters())


def test_flop_convention_counts_a_multiply_add_as_two():
    linear = nn.Linear(8, 4)
    assert module_flops(linear, torch.zeros(3, 8))[0] == 2 * 3 * 8 * 4
    conv = nn.Conv2d(2, 3, 3, padding=1)
    assert module_flops(conv, torch.zeros(1, 2, 5, 5))[0] == 2 * (3 * 2 * 3 * 3) * 5 * 5


def test_encoder_flops_by_hand():
    tokens, dim, hidden, heads = 1 + 2 * 2, TINY.embed, 4 * TINY.embed, TINY.heads
    patch_embed = 2 * (dim * 3 * 14 * 14) * 2 * 2
    linears = 2 * tokens * (dim * 3 * dim + dim * dim + dim * hidden + hidden * dim)
    attention = 2 * 2 * heads * tokens * tokens * (dim // heads)
    assert count_flops(TINY, 28).encoder == patch_embed + TINY.depth * (linears + attention)


def test_meta_flop_count_equals_a_real_forward():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    counted = count_flops(TINY, 28)
    network = build_network(TINY, "cpu")
    with sdpa_kernel(SDPBackend.MATH):
        real, _ = module_flops(network, torch.zeros(1, 3, 28, 28))
    assert counted.total == real and counted.decoder > 0


def test_paper_convention_follows_thops_rules():
    """A transposed conv by its output size, a norm 2 per element (4 with affine), biases and activations free."""
    up = nn.ConvTranspose2d(3, 5, 4, stride=4)
    x = torch.zeros(1, 3, 2, 2)
    with ThopCounter(up) as thop:
        correct, y = module_flops(up, x)
    assert y.shape == (1, 5, 8, 8)
    assert correct == 2 * x.numel() * 5 * 16 and thop.flops == 2 * y.numel() * 3 * 16 == 16 * correct
    block = nn.Sequential(nn.Linear(6, 4), nn.GELU(), nn.Unflatten(1, (4, 1, 1)), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 4, 3, padding=1, groups=2), nn.BatchNorm2d(4, affine=False)).eval()
    with ThopCounter(block) as thop:
        block(torch.zeros(2, 6))
    assert thop.macs == 2 * 4 * 6 + 2 * 8 * 2 + 8 * (4 // 2) * 9 + 2 * 8


@pytest.fixture(scope="module")
def vitl_flops() -> dict[tuple[str, int], FlopCount]:
    """The paper's SDT and DPT on DINOv3 ViT-L/16 at 256², 512² and 1024², counted on the meta device."""
    return {(head, r): count_flops(dinov3_config(VIT_L, head), r) for head in ("sdt", "dpt") for r in (256, 512, 1024)}


@pytest.mark.parametrize("head", ["sdt", "dpt"])
def test_decoder_flops_reproduce_the_papers_figures_both_ways(vitl_flops, head):
    counts = [vitl_flops[head, r] for r in (256, 512, 1024)]
    assert tuple(round(c.decoder_thop / 1e9, 3) for c in counts) == PAPER_CONVENTION_GFLOPS[head]
    assert tuple(round(c.decoder / 1e9, 2) for c in counts) == CORRECT_GFLOPS[head]
    for count, paper in zip(counts, report.PAPER_GFLOPS[head].values()):
        assert count.decoder_thop / 1e9 == pytest.approx(paper, rel=report.REPRODUCED)


def test_models_for_each_kind_of_encoder():
    paper = resolve_models("dinov3-vitl", ["sdt", "dpt", "dav2-dpt"])
    assert [m.paper for m in paper] == [True, True, False]
    assert [m.config for m in paper] == [dinov3_config(VIT_L, h) for h in ("sdt", "dpt", "dav2-dpt")]
    assert [m.label for m in paper] == ["DINOv3 ViT-L/16 + SDT-256", "DINOv3 ViT-L/16 + DPT-512 (paper)",
                                        "DINOv3 ViT-L/16 + DAv2 DPT-256"]
    registry = resolve_models(DEFAULT_MODEL, ["sdt", "dpt", "dav2-dpt"])
    assert registry[0].config == MODELS[DEFAULT_MODEL].config and not registry[0].paper
    assert (registry[1].config.head, registry[1].config.out_channels) == ("dpt-dinov3", (768,) * 4)
    assert registry[2].config.head == "dpt" and registry[2].config.embed == 768 and registry[2].config.features == 256
    baseline = resolve_models("dav2-dpt-vitb", ["sdt", "dpt", "dav2-dpt"])
    assert baseline[2].config == MODELS["dav2-dpt-vitb"].config and baseline[2].label == "dav2-dpt-vitb"
    assert baseline[0].config.head == "sdt" and baseline[1].config.head == "dpt-dinov3"
    assert all(m.config.encoder == "dinov2" and m.config.embed == 768 for m in baseline)
    with pytest.raises(UsageError, match="--encoder"):
        resolve_models("vit-huge", ["sdt"])
    with pytest.raises(UsageError, match="--heads"):
        resolve_models("dinov3-vits", ["unet"])


def test_resolution_must_fit_the_patch_size():
    with pytest.raises(UsageError, match="multiple of .* 14 .*try 28"):
        run_bench(BenchSettings(encoder="tiny", arch=TINY, heads=("sdt",), resolutions=(30,), device="cpu"))


def test_percentile_interpolates():
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([5.0], 95) == 5.0


@pytest.fixture(scope="module")
def tiny_result() -> BenchResult:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(measure.MATMUL_SIZE, "cpu", 128)
        steps: list[tuple[str, int, int]] = []
        result = run_bench(BenchSettings(encoder="tiny", arch=TINY, heads=("sdt", "dpt", "dav2-dpt"),
                                         resolutions=(28, 56), device="cpu", precision="fp32", runs=2, warmup=1),
                           lambda text, done, total: steps.append((text, done, total)))
    torch.set_num_threads(threads)
    assert ("SDT 56² · run 2/2", 3, 6) in steps and steps[-1] == ("matmul peak", 6, 6)
    runs = [text for text, _, _ in steps if "· run" in text]
    assert runs[:6] == [f"{head} 28² · run {i}/2" for i in (1, 2) for head in ("SDT", "DPT", "DAV2-DPT")]
    return result


def test_run_measures_every_head_and_resolution(tiny_result):
    keys = [(m.head, m.resolution) for m in tiny_result.measurements]
    assert keys == [(h, r) for h in ("sdt", "dpt", "dav2-dpt") for r in (28, 56)]
    sdt, dpt, dav2 = tiny_result.measurements[0], tiny_result.measurements[2], tiny_result.measurements[4]
    assert sdt.label == "tiny" and not sdt.paper
    assert (sdt.decoder_params, sdt.total_params) == head_parameters(TINY)
    assert sdt.flops == count_flops(TINY, 28)
    assert dpt.label == "tiny encoder + DPT-512 (paper)" and dpt.decoder_params == paper_dpt_parameters(TINY.embed)
    assert dav2.label == "tiny encoder + DAv2 DPT-256" and dav2.decoder_params == DAV2_DPT_FIXED + 2816 * TINY.embed
    assert tiny_result.settings["models"]["dpt"]["config"]["head"] == "dpt-dinov3"
    for m in tiny_result.measurements:
        assert m.latency.runs == 2 and m.latency.warmup == 1
        assert m.latency.p50_ms <= m.latency.p95_ms and m.latency.std_ms >= 0
        assert m.peak_memory_bytes and m.peak_memory_bytes > 0
        assert m.matmul_peak_flops == tiny_result.matmul_peak.flops_per_s
        assert m.peak_ratio == pytest.approx(m.achieved_flops / m.matmul_peak_flops)
    assert tiny_result.matmul_peak.size == 128 and len(tiny_result.matmul_peak.samples) == 6 + 1


def test_report_files(tiny_result, tmp_path):
    paths = report.write_report(tiny_result, tmp_path / "out")
    assert [p.name for p in paths] == list(report.FILES)
    md = (tmp_path / "out" / "bench.md").read_text()
    for heading in ("# anydepth bench", "## Results", "## SDT vs DPT", "## Decoder parameters", "## FLOP counting",
                    "## Targets"):
        assert heading in md
    assert "multiply-add counts as 2 FLOPs" in md and "twice the multiply-adds the `thop` package counts" in md
    assert "| dinov3-vitl | 13,384,261 (13.38 M) | 99,579,713 (99.58 M) | 86.6% | 13.38 M | 99.58 M | 86.6% |" in md
    assert "| dinov3-vits | 5,517,381 (5.52 M) | 50,825,153 (50.83 M) | 89.1% |" in md
    pairs = [(m, n) for m in tiny_result.measurements for n in tiny_result.measurements
             if (m.head, n.head) == ("sdt", "dpt") and m.resolution == n.resolution]
    assert [m.resolution for m, _ in pairs] == [28, 56]
    paragraph = next(line for line in md.splitlines() if line.startswith("By a correct count"))
    for sdt, dpt in pairs:
        assert f"{dpt.flops.decoder / sdt.flops.decoder:.2f}×" in paragraph
        assert f"{dpt.flops.decoder_thop / sdt.flops.decoder_thop:.2f}×" in paragraph
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert {"machine", "settings", "flop_convention", "paper_flop_convention", "memory", "matmul_peak",
            "measurements", "decoder_parameters", "paper", "targets", "dpt_over_sdt_decoder_flops"} <= data.keys()
    assert data["dpt_over_sdt_decoder_flops"]["28"] == {
        "correct": pairs[0][1].flops.decoder / pairs[0][0].flops.decoder,
        "paper_convention": pairs[0][1].flops.decoder_thop / pairs[0][0].flops.decoder_thop}
    assert [(p["encoder"], p["dpt"], p["paper_dpt_m"]) for p in data["decoder_parameters"]] == [
        ("dinov3-vits", 50_825_153, 50.83), ("dinov3-vitb", 76_047_425, 76.05), ("dinov3-vitl", 99_579_713, 99.58)]
    assert {"cpu", "gpu", "torch", "torch_threads"} <= data["machine"].keys()
    first = data["measurements"][0]
    assert {"decoder_params", "total_params", "flops", "latency", "throughput_images_per_s", "peak_memory_bytes",
            "achieved_flops_per_s", "matmul_peak_ratio", "paper_latency_ms"} <= first.keys()
    assert {"mean_ms", "std_ms", "p50_ms", "p95_ms"} <= first["latency"].keys()
    assert first["flops"]["total"] == first["flops"]["encoder"] + first["flops"]["decoder"]
    assert first["flops"]["decoder_thop"] == tiny_result.measurements[0].flops.decoder_thop > 0
    assert [t["name"] for t in data["targets"]] == ["cpu-matmul-ratio", "gpu-latency"]
    assert all(t["met"] is None for t in data["targets"])
    png = (tmp_path / "out" / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def _measurement(encoder: str, head: str, resolution: int, mean_ms: float, flops: int, paper: bool = False,
                 count: FlopCount | None = None):
    latency = Latency(mean_ms, 0.0, mean_ms, mean_ms, 3, 1)
    return Measurement(encoder, head, encoder, paper, resolution, 1, 1, 2,
                       count or FlopCount(flops // 2, flops // 2, flops // 2), latency, 1, 100e9)


def _result(device: str, precision: str, measurements: list[Measurement], gpu: str | None = None) -> BenchResult:
    return BenchResult({"device": device, "precision": precision}, {"gpu": gpu}, MatmulPeak(128, precision, 100e9,
                       (100e9, 90e9)), "", measurements, [], "", 0.0)


def test_cpu_target_is_judged_on_the_default_model_at_518():
    met = report.targets(_result("cpu", "fp32", [_measurement(DEFAULT_MODEL, "sdt", 518, 1000.0, 80 * 10**9)]))[0]
    assert (met.met, met.measured) == (True, "80.0%")
    missed = report.targets(_result("cpu", "fp32", [_measurement(DEFAULT_MODEL, "sdt", 518, 1000.0, 70 * 10**9)]))
    assert missed[0].met is False and missed[1].met is None and "no GPU" in missed[1].note
    elsewhere = report.targets(_result("cpu", "fp32", [_measurement(DEFAULT_MODEL, "sdt", 504, 1000.0, 90 * 10**9)]))
    assert elsewhere[0].met is None and "--resolution 518" in elsewhere[0].note


def test_cpu_target_in_bf16_is_judged_against_the_bf16_peak_at_its_own_share():
    met = report.targets(_result("cpu", "bf16", [_measurement(DEFAULT_MODEL, "sdt", 518, 1000.0, 60 * 10**9)]))[0]
    assert (met.met, met.measured) == (True, "60.0%") and "in bf16" in met.goal and "≥ 55%" in met.goal
    missed = report.targets(_result("cpu", "bf16", [_measurement(DEFAULT_MODEL, "sdt", 518, 1000.0, 50 * 10**9)]))[0]
    assert missed.met is False
    fp16 = report.targets(_result("cpu", "fp16", [_measurement(DEFAULT_MODEL, "sdt", 518, 1000.0, 90 * 10**9)]))[0]
    assert fp16.met is None and "--precision fp32" in fp16.note


def test_gpu_target_is_judged_on_the_paper_model_in_bf16():
    run = [_measurement("dinov3-vitl", "sdt", 1024, 24.0, 10**12, paper=True)]
    cpu, gpu = report.targets(_result("cuda:0", "bf16", run, gpu="NVIDIA H100 80GB HBM3"))
    assert cpu.met is None and (gpu.met, gpu.measured) == (True, "24.00 ms")
    slow = report.targets(_result("cuda:0", "bf16", [_measurement("dinov3-vitl", "sdt", 1024, 30.0, 10**12, True)],
                                  gpu="NVIDIA A100"))[1]
    assert slow.met is False and "H100" in slow.note
    assert report.targets(_result("cuda:0", "fp16", run, gpu="NVIDIA H100"))[1].met is None


def test_convention_notes():
    assert "the paper's figures reproduced" in report.convention_note("dpt", {"paper_convention": 1.0004,
                                                                            "correct": 0.695})
    assert "NOT the paper's figures" in report.convention_note("dpt", {"paper_convention": 0.125, "correct": 0.125})


def test_report_of_the_papers_set_up_compares_both_conventions(vitl_flops, tiny_result):
    """On the paper's set-up our paper-convention count is the paper's column and DPT costs 1.32× SDT, not 1.90×."""
    run = [_measurement("dinov3-vitl", head, r, ms, 0, paper=True, count=vitl_flops[head, r])
           for head in ("sdt", "dpt") for r, ms in ((256, 6.0), (512, 24.0), (1024, 96.0))]
    result = dataclasses.replace(tiny_result, measurements=run)
    ratios = report.paper_flop_ratios(result)
    assert ratios["sdt"]["paper_convention"] == pytest.approx(1, abs=report.REPRODUCED)
    assert ratios["dpt"]["paper_convention"] == pytest.approx(1, abs=report.REPRODUCED)
    assert ratios["dpt"]["correct"] == pytest.approx(4941.43 / 7106.22, rel=1e-4)
    md = report.markdown(result)
    assert "By a correct count DPT's decoder costs 1.32× SDT's, not the 1.90× the paper's convention suggests" in md
    assert md.count("By a correct count") == 1 and md.count("the paper's figures reproduced") == 2
    assert "| 256² | 6.00 | 6.00 | 1.000 | 1.092 | 233.85 | 308.84 | 1.321 | 234.176 | 444.139 | 1.897 | 1.897 |" in md
    data = report.to_json(result)
    assert data["dpt_over_sdt_decoder_flops"]["1024"]["correct"] == pytest.approx(4941.43 / 3741.67, rel=1e-5)
    assert data["measurements"][3]["paper_decoder_gflops"] == 444.14


def test_command_writes_the_report_and_prints_json(tmp_path):
    app = typer.Typer()
    app.command()(bench)
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(TINY.to_dict()))
    result = CliRunner().invoke(app, ["--encoder", "tiny", "--arch", str(arch), "-r", "28", "--device", "cpu",
                                      "--runs", "1", "--warmup", "0", "-o", str(tmp_path / "b"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(m["head"], m["resolution"]) for m in data["measurements"]] == [("sdt", 28), ("dpt", 28)]
    assert [m["label"] for m in data["measurements"]] == ["tiny", "tiny encoder + DPT-512 (paper)"]
    assert data["measurements"][1]["decoder_params"] == paper_dpt_parameters(TINY.embed)
    assert data["measurements"][1]["flops"]["decoder_thop"] == count_flops(
        resolve_models("tiny", ["dpt"], TINY)[0].config, 28).decoder_thop
    assert data["settings"]["arch"]["embed"] == TINY.embed and data["settings"]["heads"] == ["sdt", "dpt"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["bench.json", "bench.md", "bench.png"]
    assert "SDT" in result.stderr and "target cpu-matmul-ratio" in result.stderr
