"""The heads `anydepth bench` measures and the networks it builds them into: which head on which encoder, their
parameter counts and the resolutions they take."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from anydepth_cli.errors import UsageError
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import build_network
from anydepth_cli.models.registry import ENCODER_MODELS, MODELS, VIT_B, VIT_L, VIT_S

ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "dinov3-vits": ("DINOv3 ViT-S/16", VIT_S), "dinov3-vitb": ("DINOv3 ViT-B/16", VIT_B),
    "dinov3-vitl": ("DINOv3 ViT-L/16", VIT_L),
}
"""`--encoder` names of the bare DINOv3 encoders the paper's heads are put on: (label, size)."""
PAPER_ENCODER = "dinov3-vitl"
DEFAULT_RESOLUTIONS = (256, 512, 1024)


@dataclass(frozen=True)
class BenchHead:
    """A head `--heads` can name: its label, the architecture head it is, and the settings it is measured in."""

    label: str
    architecture: str
    """The `NetworkConfig.head` it is built as (bench names are not architecture names)."""
    settings: Callable[[int], dict[str, Any]]
    """The head's `NetworkConfig` fields on an encoder of the given width: the paper's for SDT and DPT, Depth
    Anything V2 Large's for its DPT."""
    paper: bool
    """Whether the paper measured this head, so its figures are compared with ours."""


BENCH_HEADS: dict[str, BenchHead] = {
    "sdt": BenchHead("SDT-256", "sdt", lambda width: dict(fusion=256, cls=True, detail_enhancer=True), True),
    "dpt": BenchHead("DPT-512 (paper)", "dpt-dinov3",
                     lambda width: dict(features=512, out_channels=(width,) * 4, cls=True, batchnorm=True, outputs=1),
                     True),
    "dav2-dpt": BenchHead("DAv2 DPT-256", "dpt",
                          lambda width: dict(features=256, out_channels=(256, 512, 1024, 1024), cls=False), False),
    "vggt-dpt": BenchHead("VGGT DPT-256", "dpt-vggt",
                          lambda width: dict(features=256, out_channels=(256, 512, 1024, 1024), outputs=2), False),
}
"""`--heads` names: the paper's SDT, the paper's DPT (DINOv3's DPT head), Depth Anything V2's DPT and VGGT's depth
head (its DPT with depth and confidence outputs)."""
DEFAULT_HEADS = ("sdt", "dpt")


@dataclass(frozen=True)
class BenchModel:
    """One network to measure: what `--encoder` named, which head, its label and architecture."""

    encoder: str
    head: str
    label: str
    config: NetworkConfig
    paper: bool
    """True for the paper's set-up (DINOv3 ViT-L/16 with the paper's SDT or DPT), whose figures we compare."""


@dataclass(frozen=True)
class DecoderParameters:
    """Head parameters of the paper's SDT and the paper's DPT on one DINOv3 encoder size."""

    encoder: str
    sdt: int
    dpt: int

    @property
    def reduction(self) -> float:
        """Fraction of the DPT head's parameters the SDT head does without."""
        return 1 - self.sdt / self.dpt


def paper_config(template: NetworkConfig, head: str) -> NetworkConfig:
    """Bench head `head` (a BENCH_HEADS name), in its bench settings, on `template`'s encoder."""
    encoder = dict(embed=template.embed, depth=template.depth, heads=template.heads, layers=template.layers,
                   encoder=template.encoder, encoder_norm=template.encoder_norm, patch_encoder=template.patch_encoder,
                   patch_depth=template.patch_depth, patch_heads=template.patch_heads)
    spec = BENCH_HEADS[head]
    return NetworkConfig(**encoder, head=spec.architecture, **spec.settings(template.embed))


def dinov3_config(size: dict[str, Any], head: str) -> NetworkConfig:
    """Bench head `head` on a DINOv3 encoder of `size` (one of VIT_S/B/L)."""
    template = NetworkConfig(**size, encoder="dinov3", encoder_norm=True, head="sdt")
    return paper_config(template, head)


def resolve_models(encoder: str, heads: Sequence[str], arch: NetworkConfig | None = None) -> list[BenchModel]:
    """The networks to measure, one per bench head.

    `encoder` is a DINOv3 size (`dinov3-vits|vitb|vitl`: the heads in their bench settings on it)
    or a registry model (its own head for the bench head it is, the others in their bench
    settings on its encoder); `arch`, when given, stands in for a registry model's architecture
    and is named `encoder`.
    """
    unknown = [h for h in heads if h not in BENCH_HEADS]
    if unknown or not heads:
        raise UsageError(f"--heads must list some of {', '.join(BENCH_HEADS)}, not {','.join(heads) or 'nothing'}")
    if arch is None and encoder in ENCODERS:
        name, size = ENCODERS[encoder]
        return [BenchModel(encoder, h, f"{name} + {BENCH_HEADS[h].label}", dinov3_config(size, h),
                           encoder == PAPER_ENCODER and BENCH_HEADS[h].paper)
                for h in heads]
    named = {**MODELS, **ENCODER_MODELS}
    if arch is None and encoder not in named:
        raise UsageError(f"--encoder must be one of {', '.join([*ENCODERS, *named])}, not {encoder!r}")
    own = arch or named[encoder].config
    return [BenchModel(encoder, h, encoder, own, False) if own.head == BENCH_HEADS[h].architecture else
            BenchModel(encoder, h, f"{encoder} encoder + {BENCH_HEADS[h].label}", paper_config(own, h), False)
            for h in heads]


def head_parameters(config: NetworkConfig) -> tuple[int, int]:
    """(decoder, total) parameter counts of the network `config` describes (built on the meta device)."""
    network = build_network(config, device="meta")
    return sum(p.numel() for p in network.head.parameters()), sum(p.numel() for p in network.parameters())


def decoder_parameter_table() -> list[DecoderParameters]:
    """Head parameters of the paper's SDT and the paper's DPT on DINOv3 ViT-S, ViT-B and ViT-L."""
    return [DecoderParameters(name, head_parameters(dinov3_config(size, "sdt"))[0],
                              head_parameters(dinov3_config(size, "dpt"))[0])
            for name, (_, size) in ENCODERS.items()]


def default_resolutions(encoder: str, arch: NetworkConfig | None = None) -> tuple[int, ...]:
    """DEFAULT_RESOLUTIONS, each rounded to the nearest multiple of `encoder`'s patch size (252, 518 and 1022 for
    patch 14, the sizes a patch-14 encoder such as VGGT's accepts)."""
    patch = resolve_models(encoder, ["sdt"], arch)[0].config.patch_size
    return tuple(max(patch, round(r / patch) * patch) for r in DEFAULT_RESOLUTIONS)


def check_resolution(model: BenchModel, resolution: int) -> None:
    """A usage error unless `resolution` is a positive multiple of the encoder's patch size."""
    patch = model.config.patch_size
    if resolution < patch or resolution % patch:
        near = max(patch, round(resolution / patch) * patch)
        raise UsageError(f"--resolution {resolution} is not a multiple of {model.label}'s patch size {patch} "
                         f"(try {near})")
