"""The architecture description a network is built from (the fixtures' `config` object)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from anydepth_cli.errors import UsageError

ENCODERS = ("dinov2", "dinov3", "vggt")
HEADS = ("sdt", "dpt", "dpt-dinov3", "dpt-vggt")
LAYOUTS = ("dav2", "da3", "anydepth-train", "vggt")
OUTPUT_KINDS = ("depth", "disparity", "metric")
"""`depth` (large = far) and `disparity` (large = near) are affine-invariant; `metric` is depth in metres."""
SPACES = ("depth", "disparity")
"""What a map grows with (`space_of`): the spaces where scale and shift are fitted."""
PATCH_ENCODERS = {
    "dinov2-vits14-reg": (384, 12, 6), "dinov2-vitb14-reg": (768, 12, 12), "dinov2-vitl14-reg": (1024, 24, 16),
}
"""The DINOv2 ViTs with 4 registers a VGGT aggregator may embed its patches with: (width, depth, heads)."""
ACTIVATIONS = {"relu": 0.0, "relu+0.001": 0.001, "sigmoid": 0.0}
"""Final activations and the smallest value each gives: ReLU with a floor added after it, or a sigmoid times the
network's `max_depth` (metric models)."""


def space_of(kind: str) -> str:
    """The quantity a map of `kind` grows with: `disparity` for disparity, `depth` for depth and metric depth (where a
    scale and shift are fitted, picture colours run, and near and far are told apart)."""
    return "disparity" if kind == "disparity" else "depth"


RESIZES = {
    "dav2": "Depth Anything V2's infer_image: the shorter side to the input size, each side rounded to a multiple of "
            "the patch (up where that falls below the input size), bicubic on floats (images longer than 4:1 scaled "
            "down to the token cap); the map back bilinear with corner pixels aligned (align_corners=True)",
    "da3": "Depth Anything 3's input processor: the longer side to the input size (sides rounded to whole pixels), "
           "then each side to the nearest multiple of the patch (at least one patch), each step bicubic where it "
           "enlarges and area-averaging where it shrinks, on 8-bit pixels for 8-bit images; the map back bilinear on "
           "pixel centres (align_corners=False)",
    "vggt": "VGGT's load_and_preprocess_images without its crop: the width to the input size and the height scaled "
            "with it and rounded to the nearest multiple of the patch (at least one patch), bicubic as Pillow "
            "resamples (images longer than 4:1 scaled down to the token cap); the map back as Depth Anything V2's "
            "(bilinear, align_corners=True)",
}
"""The published single-image inference pipelines a network may be run by: how a photo is resized for the network
and the network's map back to the photo (carried out by `inference.preprocess.RESIZINGS`)."""


DECLARATIONS = ("output", "activation", "max_depth", "resize")
"""Keys that say what a network's numbers mean and how it is run, which may stand beside a fixture's `config`."""


def default_output(head: str) -> tuple[str, str]:
    """(output kind, final activation) of a head as its published weights were trained.

    Depth Anything V2's DPT regresses disparity behind a ReLU; the AnyDepth code ends every
    model (SDT, and the DINOv3 DPT it trains) in `relu(x) + 0.001`, a depth regressor.
    """
    return ("disparity", "relu") if head == "dpt" else ("depth", "relu+0.001")


def default_resize(layout: str) -> str:
    """The inference pipeline of a network's encoder family: Depth Anything 3's for the DA3 layout, VGGT's for the
    VGGT layout, Depth Anything V2's for the others (the Depth Anything V2 encoders, and networks trained here, which
    see its preprocessing)."""
    return {"da3": "da3", "vggt": "vggt"}.get(layout, "dav2")


def _metric_problems(output: str, activation: str, max_depth: float | None) -> list[str]:
    """What is wrong in a metric declaration: metric output, the sigmoid and a positive `max_depth` go together."""
    metric = output == "metric"
    if not metric:
        return ([] if activation != "sigmoid" else ["activation sigmoid is for output metric"]) + (
            [] if max_depth is None else ["max_depth is for output metric"])
    problems = [] if activation == "sigmoid" else [f"output metric needs activation sigmoid, not {activation!r}"]
    if not (isinstance(max_depth, (int, float)) and not isinstance(max_depth, bool) and 0 < max_depth < float("inf")):
        problems.append(f"output metric needs max_depth, a positive number of metres, not {max_depth!r}")
    return problems


@dataclass(frozen=True)
class NetworkConfig:
    """Encoder width/depth/heads, the tapped layers and the head settings of one network."""

    embed: int
    depth: int
    heads: int
    layers: tuple[int, ...]
    head: str
    encoder: str = "dinov2"
    encoder_norm: bool = False
    fusion: int = 256
    cls: bool = False
    detail_enhancer: bool = False
    features: int = 256
    out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    batchnorm: bool = False
    outputs: int = 1
    layout: str = "dav2"
    output: str | None = None
    """`depth` (large = far) or `disparity` (large = near); None takes the head's default."""
    activation: str | None = None
    """A key of ACTIVATIONS; None takes the head's default."""
    resize: str | None = None
    """One of RESIZES: the inference pipeline the network is run by; None takes its encoder family's (`layout`)."""
    patch_encoder: str | None = None
    """VGGT: the DINOv2 with registers (a key of PATCH_ENCODERS) that embeds the patches, `embed` wide."""
    patch_depth: int | None = None
    """VGGT: blocks of a scaled-down patch encoder (small test networks); None: `patch_encoder`'s."""
    patch_heads: int | None = None
    """VGGT: attention heads of a scaled-down patch encoder; None: `patch_encoder`'s."""
    max_depth: float | None = None
    """Metric models: the depth in metres the final sigmoid's 1 stands for (the map lies in (0, max_depth))."""

    @property
    def patch_size(self) -> int:
        return 16 if self.encoder == "dinov3" else 14

    @property
    def feature_width(self) -> int:
        """Channels of each tapped layer the head reads: VGGT's frame and global outputs side by side, 2 × `embed`."""
        return 2 * self.embed if self.encoder == "vggt" else self.embed

    @property
    def patch_encoder_size(self) -> tuple[int, int, int]:
        """VGGT: (width, depth, heads) of the DINOv2 that embeds the patches."""
        _, depth, heads = PATCH_ENCODERS[self.patch_encoder]
        return self.embed, self.patch_depth or depth, self.patch_heads or heads

    @property
    def output_floor(self) -> float:
        """The smallest value the final activation gives."""
        return ACTIVATIONS[self.activation]

    @property
    def metric(self) -> bool:
        """Whether the network answers in metres."""
        return self.output == "metric"

    @property
    def space(self) -> str:
        """`space_of` the network's output kind."""
        return space_of(self.output)

    @property
    def input_side(self) -> str:
        """Which side of a photo the input size sets: `shorter` (Depth Anything V2's pipeline), `longer` (3's) or
        `width` (VGGT's)."""
        return {"da3": "longer", "vggt": "width"}.get(self.resize, "shorter")

    @property
    def default_input_size(self) -> int:
        """The input size the network's pipeline runs at by default: Depth Anything V2's 518 px shorter side (512 for
        the patch-16 DINOv3 encoders), Depth Anything 3's 504 px longer side."""
        if self.resize == "da3":
            return 504
        return 518 if self.patch_size == 14 else 512

    def __post_init__(self) -> None:
        kind, activation = default_output(self.head)
        if self.output is None:
            object.__setattr__(self, "output", kind)
        if self.activation is None:
            object.__setattr__(self, "activation", "sigmoid" if self.output == "metric" else activation)
        if self.resize is None:
            object.__setattr__(self, "resize", default_resize(self.layout))
        problems = []
        if self.output not in OUTPUT_KINDS:
            problems.append(f"output must be one of {', '.join(OUTPUT_KINDS)}, not {self.output!r}")
        if self.activation not in ACTIVATIONS:
            problems.append(f"activation must be one of {', '.join(ACTIVATIONS)}, not {self.activation!r}")
        problems += _metric_problems(self.output, self.activation, self.max_depth)
        if self.resize not in RESIZES:
            problems.append(f"resize must be one of {', '.join(RESIZES)}, not {self.resize!r}")
        if self.encoder not in ENCODERS:
            problems.append(f"encoder must be one of {', '.join(ENCODERS)}, not {self.encoder!r}")
        if self.head not in HEADS:
            problems.append(f"head must be one of {', '.join(HEADS)}, not {self.head!r}")
        if self.layout not in LAYOUTS:
            problems.append(f"layout must be one of {', '.join(LAYOUTS)}, not {self.layout!r}")
        if self.embed <= 0 or self.heads <= 0 or self.embed % self.heads:
            problems.append(f"embed ({self.embed}) must be a positive multiple of heads ({self.heads})")
        if len(self.layers) != 4 or not all(0 <= i < self.depth for i in self.layers):
            problems.append(f"layers must be 4 block indices below depth {self.depth}, not {list(self.layers)}")
        if self.head != "sdt" and len(self.out_channels) != 4:
            problems.append("out_channels must list 4 channel counts")
        if self.outputs < 1:
            problems.append(f"outputs must be at least 1, not {self.outputs}")
        if self.encoder in ("dinov3", "vggt") and (self.embed // self.heads) % 4:
            problems.append(f"{self.encoder} needs a head width divisible by 4 for its rotary embedding")
        if self.encoder == "vggt":
            problems.extend(self._patch_encoder_problems())
        if problems:
            raise UsageError("invalid architecture: " + "; ".join(problems))

    def _patch_encoder_problems(self) -> list[str]:
        """What is wrong with a VGGT network's patch encoder settings."""
        if self.patch_encoder not in PATCH_ENCODERS:
            return [f"patch_encoder must be one of {', '.join(PATCH_ENCODERS)}, not {self.patch_encoder!r}"]
        width = PATCH_ENCODERS[self.patch_encoder][0]
        scaled = self.patch_depth is not None or self.patch_heads is not None
        _, depth, heads = self.patch_encoder_size
        problems = []
        if not scaled and self.embed != width:
            problems.append(f"{self.patch_encoder} is {width} wide: embed must be {width}, not {self.embed}")
        if depth < 1 or heads < 1 or self.embed % heads:
            problems.append(f"the patch encoder needs depth ≥ 1 and heads dividing embed ({self.embed}), not "
                            f"{depth} and {heads}")
        return problems

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "NetworkConfig":
        """Build from a fixture-style `config` mapping; keys that do not describe the network (`wrap`) are ignored."""
        known = set(cls.__dataclass_fields__)
        missing = [k for k in ("embed", "depth", "heads", "layers", "head") if k not in data]
        if missing:
            raise UsageError(f"architecture is missing {', '.join(missing)}")
        kwargs = {k: v for k, v in data.items() if k in known}
        for key in ("layers", "out_channels"):
            if key in kwargs:
                kwargs[key] = tuple(int(v) for v in kwargs[key])
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise UsageError(f"invalid architecture: {exc}") from None

    @classmethod
    def from_file(cls, path: Path) -> "NetworkConfig":
        """Read a JSON architecture file: either the config itself or a fixture file with a `config` object, whose
        declarations (DECLARATIONS) the same keys at the top level override."""
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise UsageError(f"architecture file not found: {path}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"cannot read architecture file {path}: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"architecture file {path} must hold a JSON object")
        config = data.get("config", data)
        if not isinstance(config, dict):
            raise UsageError(f"architecture file {path}: `config` must be a JSON object")
        # beside a fixture-style `config`, a top-level declaration of what the output means wins
        overrides = {k: data[k] for k in DECLARATIONS if k in data and config is not data}
        return cls.from_dict({**config, **overrides})

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["layers"] = list(self.layers)
        data["out_channels"] = list(self.out_channels)
        for key in ("patch_encoder", "patch_depth", "patch_heads"):
            if data[key] is None:
                del data[key]
        return data
