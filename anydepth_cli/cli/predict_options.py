"""The option values of `anydepth predict` and the checks of which of its options go together."""

from __future__ import annotations

from enum import Enum

from anydepth_cli.errors import UsageError


class Raw(str, Enum):
    npy = "npy"
    npz = "npz"
    png16 = "png16"
    exr = "exr"


class Codec(str, Enum):
    h264 = "h264"
    mp4v = "mp4v"
    ffv1 = "ffv1"


class Backend(str, Enum):
    auto = "auto"
    torch = "torch"
    onnxruntime = "onnxruntime"


class Axes(str, Enum):
    opengl = "opengl"
    opencv = "opencv"


class Tile(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


PHOTO_ONLY = ("--confidence", "--raw npy", "--colorbar", "--mesh", "--glb", "--axes")
VIDEO_ONLY = ("--start", "--max-frames", "--stride", "--no-stabilize", "--raw npz", "--pc-stride", "--codec")


def check_input_kind_options(photos: bool, videos: bool, used: dict[str, bool]) -> None:
    """Refuse options for an input kind the run has none of (`used`: option name → given), and a --raw that
    only one kind takes in a run of both."""
    if photos and videos:
        one_kind = [name for name in ("--raw npy", "--raw npz") if used.get(name)]
        if one_kind:
            kind = "photos" if one_kind[0] == "--raw npy" else "videos"
            raise UsageError(f"{one_kind[0]} only applies to {kind}; for photos and videos together use "
                             "--raw png16 or --raw exr")
        return
    missing, options = ("videos", VIDEO_ONLY) if photos else ("photos", PHOTO_ONLY)
    wrong = [name for name in options if used.get(name)]
    hints = {"--raw npy": " (a video takes --raw npz, png16 or exr)",
             "--raw npz": " (a photo takes --raw npy, png16 or exr)"}
    if wrong:
        raise UsageError(f"{', '.join(wrong)} only apply to {missing}" + "".join(hints.get(name, "") for name in wrong))


def picture_cmap(cmap: str | None, grayscale: bool, codec: Codec | None, photos: bool) -> str:
    """The colour map of the depth pictures: checked, and grey for --grayscale."""
    from anydepth_cli.io.writers import DEFAULT_CMAP, available_cmaps

    if grayscale:
        return "gray"
    if cmap is None:
        return DEFAULT_CMAP
    if cmap not in available_cmaps():
        raise UsageError(f"unknown --cmap {cmap!r}; try {DEFAULT_CMAP}, viridis, magma, turbo or gray")
    if codec == Codec.ffv1 and not photos and cmap != "gray":
        raise UsageError("--codec ffv1 writes grey depth videos, so --cmap does not apply; "
                         "--codec h264 writes colour ones")
    return cmap
