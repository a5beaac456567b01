"""`anydepth bench`: exact parameter counts, the FLOP convention, report structure and targets (tiny sizes, no timing)."""

from __future__ import annotations

import json

import pytest
import torch
import typer
from torch import nn
from typer.testing import CliRunner

from anydepth_cli.bench import report, runner
from anydepth_cli.bench.runner import (BenchResult, BenchSettings, FlopCount, Latency, MatmulPeak, Measurement,
                                       count_flops, decoder_parameter_table, dinov3_config, head_parameters,
                                       module_flops, percentile, resolve_models, run_bench)
from anydepth_cli.cli.bench import bench
from anydepth_cli.errors import UsageError
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.registry import DEFAULT_MODEL, MODELS, VIT_B, VIT_L, VIT_S

TINY = NetworkConfig(embed=32, depth=4, heads=2, layers=(0, 1, 2, 3), head="sdt", fusion=16, cls=True,
                     detail_enhancer=True)

DPT_FIXED = 28_063_425
"""DPT-256 head parameters that do not depend on the encoder width C (the four 1×1 projections add 2816·C):
transposed 4×/2× resizes 1,048,832 + 1,049,088, stride-2 conv 9,438,208, layer_rn convs 6,488,064,
four fusion blocks 4 × 2,426,112, output convs 295,040 + 36,896 + 33, projection biases 2816."""


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    """Tiny networks on a busy shared CPU: one thread avoids OpenMP stalls; small matmul peak."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setitem(runner.MATMUL_SIZE, "cpu", 128)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("size,sdt,dpt", [(VIT_S, 5_517_381, 29_144_769), (VIT_B, 9_451_077, 30_226_113),
                                          (VIT_L, 13_384_261, 30_947_009)])
def test_paper_head_parameter_counts(size, sdt, dpt):
    assert head_parameters(dinov3_config(size, "sdt"))[0] == sdt
    assert head_parameters(dinov3_config(size, "dpt"))[0] == dpt == DPT_FIXED + 2816 * size["embed"]


def test_decoder_parameter_table():
    rows = {(p.encoder, p.sdt, p.dpt) for p in decoder_parameter_table()}
    assert rows == {("dinov3-vits", 5_517_381, 29_144_769), ("dinov3-vitb", 9_451_077, 30_226_113),
                    ("dinov3-vitl", 13_384_261, 30_947_009)}


def test_total_parameters_count_encoder_and_head():
    network = runner.build_network(TINY, "meta")
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
    network = runner.build_network(TINY, "cpu")
    with sdpa_kernel(SDPBackend.MATH):
        real, _ = module_flops(network, torch.zeros(1, 3, 28, 28))
    assert counted.total == real and counted.decoder > 0


def test_sdt_decoder_flops_match_the_papers_count():
    decoder = count_flops(dinov3_config(VIT_L, "sdt"), 256).decoder
    assert decoder / 1e9 == pytest.approx(report.PAPER_GFLOPS["sdt"][256], rel=0.005)


def test_models_for_each_kind_of_encoder():
    paper = resolve_models("dinov3-vitl", ["sdt", "dpt"])
    assert [m.paper for m in paper] == [True, True]
    assert paper[0].config == dinov3_config(VIT_L, "sdt") and paper[1].config.out_channels == (256, 512, 1024, 1024)
    registry = resolve_models(DEFAULT_MODEL, ["sdt", "dpt"])
    assert registry[0].config == MODELS[DEFAULT_MODEL].config and not registry[0].paper
    assert registry[1].config.head == "dpt" and registry[1].config.embed == 768 and registry[1].config.features == 256
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
        patch.setitem(runner.MATMUL_SIZE, "cpu", 128)
        steps: list[tuple[str, int, int]] = []
        result = run_bench(BenchSettings(encoder="tiny", arch=TINY, resolutions=(28, 56), device="cpu",
                                         precision="fp32", runs=2, warmup=1),
                           lambda text, done, total: steps.append((text, done, total)))
    torch.set_num_threads(threads)
    assert ("SDT 56² · run 2/2", 1, 4) in steps and steps[-1] == ("matmul peak", 4, 4)
    return result


def test_run_measures_every_head_and_resolution(tiny_result):
    keys = [(m.head, m.resolution) for m in tiny_result.measurements]
    assert keys == [("sdt", 28), ("sdt", 56), ("dpt", 28), ("dpt", 56)]
    sdt = tiny_result.measurements[0]
    assert sdt.label == "tiny" and not sdt.paper
    assert (sdt.decoder_params, sdt.total_params) == head_parameters(TINY)
    assert sdt.flops == count_flops(TINY, 28)
    assert tiny_result.measurements[2].decoder_params == DPT_FIXED + 2816 * TINY.embed
    for m in tiny_result.measurements:
        assert m.latency.runs == 2 and m.latency.warmup == 1
        assert m.latency.p50_ms <= m.latency.p95_ms and m.latency.std_ms >= 0
        assert m.peak_memory_bytes and m.peak_memory_bytes > 0
        assert m.matmul_peak_flops == tiny_result.matmul_peak.flops_per_s
        assert m.peak_ratio == pytest.approx(m.achieved_flops / m.matmul_peak_flops)
    assert tiny_result.matmul_peak.size == 128 and len(tiny_result.matmul_peak.samples) == 4 + 1


def test_report_files(tiny_result, tmp_path):
    paths = report.write_report(tiny_result, tmp_path / "out")
    assert [p.name for p in paths] == list(report.FILES)
    md = (tmp_path / "out" / "bench.md").read_text()
    for heading in ("# anydepth bench", "## Results", "## SDT vs DPT", "## Decoder parameters", "## FLOP counting",
                    "## Targets"):
        assert heading in md
    assert "multiply-add counts as 2 FLOPs" in md
    assert "| dinov3-vitl | 13,384,261 (13.38 M) | 30,947,009 (30.95 M) | 56.8% | 13.38 M | 99.58 M | 86.6% |" in md
    data = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert {"machine", "settings", "flop_convention", "memory", "matmul_peak", "measurements", "decoder_parameters",
            "paper", "targets"} <= data.keys()
    assert {"cpu", "gpu", "torch", "torch_threads"} <= data["machine"].keys()
    first = data["measurements"][0]
    assert {"decoder_params", "total_params", "flops", "latency", "throughput_images_per_s", "peak_memory_bytes",
            "achieved_flops_per_s", "matmul_peak_ratio", "paper_latency_ms"} <= first.keys()
    assert {"mean_ms", "std_ms", "p50_ms", "p95_ms"} <= first["latency"].keys()
    assert first["flops"]["total"] == first["flops"]["encoder"] + first["flops"]["decoder"]
    assert [t["name"] for t in data["targets"]] == ["cpu-matmul-ratio", "gpu-latency"]
    assert all(t["met"] is None for t in data["targets"])
    png = (tmp_path / "out" / "bench.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def _measurement(encoder: str, head: str, resolution: int, mean_ms: float, flops: int, paper: bool = False):
    latency = Latency(mean_ms, 0.0, mean_ms, mean_ms, 3, 1)
    return Measurement(encoder, head, encoder, paper, resolution, 1, 1, 2, FlopCount(flops // 2, flops // 2),
                       latency, 1, 100e9)


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


def test_gpu_target_is_judged_on_the_paper_model_in_bf16():
    run = [_measurement("dinov3-vitl", "sdt", 1024, 24.0, 10**12, paper=True)]
    cpu, gpu = report.targets(_result("cuda:0", "bf16", run, gpu="NVIDIA H100 80GB HBM3"))
    assert cpu.met is None and (gpu.met, gpu.measured) == (True, "24.00 ms")
    slow = report.targets(_result("cuda:0", "bf16", [_measurement("dinov3-vitl", "sdt", 1024, 30.0, 10**12, True)],
                                  gpu="NVIDIA A100"))[1]
    assert slow.met is False and "H100" in slow.note
    assert report.targets(_result("cuda:0", "fp16", run, gpu="NVIDIA H100"))[1].met is None


def test_convention_notes():
    assert "same count" in report.convention_note("sdt", 0.999)
    assert "MACs" in report.convention_note("sdt", 2.01)
    assert "not a counting-convention factor" in report.convention_note("dpt", 0.125)


def test_command_writes_the_report_and_prints_json(tmp_path):
    app = typer.Typer()
    app.command()(bench)
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(TINY.to_dict()))
    result = CliRunner().invoke(app, ["--encoder", "tiny", "--arch", str(arch), "--heads", "sdt", "-r", "28",
                                      "--device", "cpu", "--runs", "1", "--warmup", "0", "-o", str(tmp_path / "b"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [(m["head"], m["resolution"]) for m in data["measurements"]] == [("sdt", 28)]
    assert data["settings"]["arch"]["embed"] == TINY.embed
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["bench.json", "bench.md", "bench.png"]
    assert "SDT" in result.stderr and "target cpu-matmul-ratio" in result.stderr
