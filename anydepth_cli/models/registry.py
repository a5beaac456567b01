"""Named models: where their weights live, how to build them, and their licences."""

from __future__ import annotations

from dataclasses import dataclass

from anydepth_cli.errors import UsageError
from anydepth_cli.models.config import NetworkConfig

ANYDEPTH_REPO = "AIGeeksGroup/AnyDepth"
CC_BY_NC_SA = "CC BY-NC-SA 4.0"
CC_BY_NC = "CC BY-NC 4.0"
APACHE = "Apache-2.0"

VIT_S = dict(embed=384, depth=12, heads=6, layers=(2, 5, 8, 11))
VIT_B = dict(embed=768, depth=12, heads=12, layers=(2, 5, 8, 11))
VIT_L = dict(embed=1024, depth=24, heads=16, layers=(4, 11, 17, 23))
VGGT_1B = dict(encoder="vggt", patch_encoder="dinov2-vitl14-reg", layout="vggt", **VIT_L)
"""VGGT-1B's aggregator: 24 frame/global block pairs 1024 wide with 16 heads on DINOv2 ViT-L/14 with registers,
tapped where VGGT's own depth head taps it."""


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable model: Hub location, architecture, licence and what it outputs."""

    name: str
    repo_id: str
    filename: str
    config: NetworkConfig
    licence: str
    description: str
    evidence: str
    """Why the output kind in `config` is believed, how sure that is, and where to read more."""
    resize_origin: str
    """Whose published inference the config's `resize` pipeline is, and why it is this model's."""

    @property
    def output(self) -> str:
        """`depth`, `disparity` or `metric` (the config's declaration)."""
        return self.config.output

    @property
    def input_size(self) -> int:
        """The input size the model runs at by default (its pipeline's)."""
        return self.config.default_input_size


SDT_EVIDENCE = ("likely, not certain: the AnyDepth training code ends every model in relu(x) + 0.001 (a depth "
                "regressor, min_depth 0.001), and an independent integration runs both published checkpoints as "
                "depth; see https://github.com/AIGeeksGroup/AnyDepth. Override with \"output\" in an --arch file.")
DAV2_EVIDENCE = ("certain: the Depth Anything V2 authors answer in their tracker, where users ask it (issues #40, "
                 "#213, #294), that the relative models output affine-invariant disparity; see "
                 "https://github.com/DepthAnything/Depth-Anything-V2/issues")
DAV2_OWN = "Depth Anything V2's own infer_image (depth_anything_v2/dpt.py)"
ANYDEPTH_NONE = ("the AnyDepth authors publish no inference code (their repository holds the network only), so the "
                 "model runs its encoder family's: ")
DA3_ORIGIN = (ANYDEPTH_NONE + "Depth Anything 3's input processor (src/depth_anything_3/utils/io/input_processor.py)."
              " Depth Anything 3 returns maps at the network's resolution and publishes no way back to the photo (its "
              "benchmarks use nearest neighbour, which leaves steps of several pixels); the map is brought back with "
              "bilinear interpolation on pixel centres, the geometry of the input resize")


DAV2_METRIC_EVIDENCE = ("certain: Depth Anything V2's metric_depth code ends the DPT head in a sigmoid and multiplies "
                        "it by max_depth (20 m for the Hypersim models, 80 m for the Virtual KITTI 2 ones), and trains "
                        "it on depth in metres; see https://github.com/DepthAnything/Depth-Anything-V2/tree/main/"
                        "metric_depth")
DAV2_METRIC_OWN = "Depth Anything V2's own metric infer_image (metric_depth/depth_anything_v2/dpt.py)"
DAV2_SIZES = {"vits": (VIT_S, 64, (48, 96, 192, 384), "Small", APACHE),
              "vitb": (VIT_B, 128, (96, 192, 384, 768), "Base", CC_BY_NC),
              "vitl": (VIT_L, 256, (256, 512, 1024, 1024), "Large", CC_BY_NC)}
"""Depth Anything V2's encoder sizes: ViT size, DPT features and projections, Hub name and licence of the weights."""
METRIC_SETS = {"hypersim": ("Hypersim", 20.0, "indoor"), "vkitti": ("VKITTI", 80.0, "outdoor")}
"""Depth Anything V2's metric training sets: Hub name, max_depth in metres and the scenes they suit."""


def _dpt(size: dict, features: int, out_channels: tuple[int, ...], **metric: object) -> NetworkConfig:
    return NetworkConfig(**size, head="dpt", encoder_norm=True, features=features, out_channels=out_channels,
                         **metric)


def _dav2_relative(encoder: str) -> ModelSpec:
    """Depth Anything V2's relative (disparity) model with the `encoder` ViT."""
    size, features, out_channels, hub_size, licence = DAV2_SIZES[encoder]
    return ModelSpec(
        f"dav2-dpt-{encoder}", f"depth-anything/Depth-Anything-V2-{hub_size}", f"depth_anything_v2_{encoder}.pth",
        _dpt(size, features, out_channels), licence, f"Depth Anything V2 {hub_size} (DPT baseline)", DAV2_EVIDENCE,
        DAV2_OWN,
    )


def _dav2_metric(dataset: str, encoder: str) -> ModelSpec:
    """Depth Anything V2's metric model trained on `dataset` with the `encoder` ViT."""
    size, features, out_channels, hub_size, licence = DAV2_SIZES[encoder]
    hub_set, max_depth, scenes = METRIC_SETS[dataset]
    return ModelSpec(
        f"dav2-metric-{dataset}-{encoder}", f"depth-anything/Depth-Anything-V2-Metric-{hub_set}-{hub_size}",
        f"depth_anything_v2_metric_{dataset}_{encoder}.pth",
        _dpt(size, features, out_channels, output="metric", max_depth=max_depth), licence,
        f"Depth Anything V2 {hub_size} metric, {scenes} ({hub_set}, up to {max_depth:g} m)", DAV2_METRIC_EVIDENCE,
        DAV2_METRIC_OWN,
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "anydepth-dav2-vitb", ANYDEPTH_REPO, "dav2_sdt_vitb.pth",
            NetworkConfig(**VIT_B, head="sdt", fusion=128, cls=True, detail_enhancer=True, layout="dav2"),
            CC_BY_NC_SA, "AnyDepth SDT on the Depth Anything V2 ViT-B encoder", SDT_EVIDENCE,
            ANYDEPTH_NONE + DAV2_OWN,
        ),
        ModelSpec(
            "anydepth-da3-vitl", ANYDEPTH_REPO, "da3_sdt_vitl.pth",
            NetworkConfig(**VIT_L, head="sdt", fusion=256, cls=False, detail_enhancer=False, layout="da3"),
            CC_BY_NC_SA, "AnyDepth SDT on the Depth Anything 3 mono ViT-L encoder", SDT_EVIDENCE, DA3_ORIGIN,
        ),
        *(_dav2_relative(encoder) for encoder in DAV2_SIZES),
        *(_dav2_metric(dataset, encoder) for dataset in METRIC_SETS for encoder in DAV2_SIZES),
    )
}
DEFAULT_MODEL = "anydepth-dav2-vitb"


@dataclass(frozen=True)
class EncoderSpec:
    """A published encoder a fresh head is trained on (no head weights are published for it): where its weights
    live and the architecture it is trained in."""

    name: str
    repo_id: str
    filename: str
    config: NetworkConfig
    """The encoder with the head trained on it by default."""
    licence: str
    description: str

    @property
    def reference(self) -> str:
        """The weights as `--encoder-weights` takes them: hf://ORG/REPO/FILE."""
        return f"hf://{self.repo_id}/{self.filename}"


ENCODER_MODELS: dict[str, EncoderSpec] = {
    spec.name: spec
    for spec in (
        EncoderSpec(
            "vggt-1b", "facebook/VGGT-1B", "model.pt",
            NetworkConfig(**VGGT_1B, head="sdt", fusion=256, cls=False, detail_enhancer=True),
            f"{CC_BY_NC} (the facebook/VGGT-1B model card; the code is under VGGT's own licence, and a separate, "
            "gated VGGT-1B-Commercial checkpoint allows commercial use)",
            "VGGT-1B's aggregator (the aggregator.* part of its model.pt, about 0.9 B parameters), frozen, with SDT "
            "on its frame and global outputs (2 × 1024 channels)",
        ),
    )
}
"""`--encoder` names: published encoders without published heads."""


def get_encoder(name: str) -> EncoderSpec:
    """The encoder entry called `name`; an unknown name is a usage error listing the known ones."""
    try:
        return ENCODER_MODELS[name]
    except KeyError:
        raise UsageError(f"unknown encoder {name!r}; choose one of: {', '.join(ENCODER_MODELS)}") from None


def get_model(name: str) -> ModelSpec:
    """The registry entry called `name`; an unknown name is a usage error listing the known ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise UsageError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None
