"""`anydepth predict`: depth maps for photos and folders, and depth videos."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from anydepth_cli.cli.console import err
from anydepth_cli.errors import UsageError

TILE_MODES = ("auto", "on", "off")
DEFAULT_MAX_PIXELS = 120_000_000
DEFAULT_OUTPUT = Path("anydepth-out")

MODEL = "Model"
OUTPUT = "Output"
RUN = "Running"
TILES = "Tiling"
CLOUD = "Point cloud"
VIDEO = "Video"


class Raw(str, Enum):
    npy = "npy"
    npz = "npz"
    png16 = "png16"


class Backend(str, Enum):
    auto = "auto"
    torch = "torch"
    onnxruntime = "onnxruntime"


class Tile(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


def parse_depth_at(text: str | None) -> tuple[int, int, float] | None:
    """`X,Y=D` → (x, y, depth)."""
    if text is None:
        return None
    try:
        where, depth = text.split("=")
        x, y = where.split(",")
        return int(x), int(y), float(depth)
    except ValueError:
        raise UsageError(f"--depth-at expects X,Y=DEPTH (e.g. 320,240=2.5), not {text!r}") from None


def video_input(inputs: list[Path]) -> Path | None:
    """The input if it is one video, None if there is no video; a video with other inputs is a usage error."""
    from anydepth_cli.io.video import is_video

    videos = [path for path in inputs if is_video(path)]
    if videos and len(inputs) > 1:
        raise UsageError(f"a video is processed on its own: give {videos[0]} to a separate `anydepth predict`")
    return videos[0] if videos else None


def check_input_kind_options(video: bool, used: dict[str, bool]) -> None:
    """Refuse options that do not apply to the input kind (`used`: option name → given)."""
    video_only = ("--start", "--max-frames", "--stride", "--no-stabilize", "--raw npz", "--pc-stride")
    wrong = [name for name, given in used.items() if given and (name in video_only) != video]
    if wrong:
        kind = "photos" if video else "a video input"
        raise UsageError(f"{', '.join(wrong)} only apply to {kind}"
                         + (" (a video takes --raw npz or --raw png16)" if "--raw npy" in wrong else ""))


def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Photos and folders (searched recursively), or one video.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the results; mirrors the input tree.", rich_help_panel=OUTPUT)] = DEFAULT_OUTPUT,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Registry model (see `anydepth models`). \\[default: anydepth-dav2-vitb]", show_default=False, rich_help_panel=MODEL)] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="Your own .pth/.safetensors weights: a file, or hf://ORG/REPO/FILE on the Hub.", rich_help_panel=MODEL)] = None,
    arch: Annotated[Optional[Path], typer.Option(help="JSON architecture of --checkpoint (a fixture .json works as is).", rich_help_panel=MODEL)] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Shorter side the network sees, in pixels. \\[default: 518]", show_default=False, rich_help_panel=MODEL)] = None,
    backend: Annotated[Backend, typer.Option(help="auto: PyTorch, or ONNX Runtime for --onnx FILE given alone, or beside --model/--checkpoint where the export was timed faster on this CPU; torch; onnxruntime.", rich_help_panel=MODEL)] = Backend.auto,
    onnx: Annotated[Optional[Path], typer.Option(help="ONNX model made by `anydepth export -m NAME -o FILE`, which also times it against PyTorch on this CPU; it holds the weights.", rich_help_panel=MODEL)] = None,
    cmap: Annotated[str, typer.Option(help="Matplotlib colour map for the depth picture.", rich_help_panel=OUTPUT)] = "inferno",
    grayscale: Annotated[bool, typer.Option("--grayscale", help="Grey depth picture instead of a colour map.", rich_help_panel=OUTPUT)] = False,
    invert: Annotated[bool, typer.Option("--invert", help="Far bright, near dark.", rich_help_panel=OUTPUT)] = False,
    raw: Annotated[Optional[Raw], typer.Option(help="Also write the model's raw output, named for what it is (photo_depth.npy or photo_disparity.npy): float32 .npy (photos), all frames as float16 .npz (videos), or 16-bit PNG scaled per image or frame (min, max and kind in its text chunks).", rich_help_panel=OUTPUT)] = None,
    side_by_side: Annotated[bool, typer.Option("--side-by-side", help="Also write the photo (or video) beside its depth picture.", rich_help_panel=OUTPUT)] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip images whose outputs all exist (resume a folder).", rich_help_panel=OUTPUT)] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel=RUN)] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32, fp16 or bf16 (auto: bf16/fp16 on GPUs, fp32 on the CPU).", rich_help_panel=RUN)] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images (or tiles) per network call.", rich_help_panel=RUN)] = 4,
    max_pixels: Annotated[int, typer.Option(help="Refuse images with more pixels than this.", rich_help_panel=RUN)] = DEFAULT_MAX_PIXELS,
    shard: Annotated[Optional[str], typer.Option(metavar="K/N|auto|off", help="Process share K of N of the photos (K from 0 to N-1; sorted by relative path), `auto` to take it from torchrun or srun, or `off`. \\[default: auto under torchrun/srun]", show_default=False, rich_help_panel=RUN)] = None,
    tile: Annotated[Tile, typer.Option(help="Tiled full-resolution inference: `on` (or bare --tile), `off`, or `auto` (images whose shorter side is over twice the input size).", rich_help_panel=TILES)] = Tile.auto,
    tile_size: Annotated[Optional[int], typer.Option(help="Tile side in image pixels. \\[default: 2 × input size]", show_default=False, rich_help_panel=TILES)] = None,
    overlap: Annotated[Optional[int], typer.Option(help="Pixels neighbouring tiles share. \\[default: tile size / 4]", show_default=False, rich_help_panel=TILES)] = None,
    confidence: Annotated[bool, typer.Option("--confidence", help="Also write a per-pixel confidence map (from tile agreement).", rich_help_panel=TILES)] = False,
    pointcloud: Annotated[bool, typer.Option("--pointcloud", help="Also write a coloured PLY point cloud.", rich_help_panel=CLOUD)] = False,
    fov: Annotated[Optional[float], typer.Option(help="Horizontal field of view in degrees. \\[default: EXIF, else 60]", show_default=False, rich_help_panel=CLOUD)] = None,
    focal: Annotated[Optional[float], typer.Option(help="Focal length in pixels (overrides --fov and EXIF).", rich_help_panel=CLOUD)] = None,
    near: Annotated[Optional[float], typer.Option(help="Depth of the nearest content, in scene units. \\[default: 1]", show_default=False, rich_help_panel=CLOUD)] = None,
    far: Annotated[Optional[float], typer.Option(help="Depth of the farthest content. \\[default: 10]", show_default=False, rich_help_panel=CLOUD)] = None,
    depth_at: Annotated[Optional[str], typer.Option(help="Known depth at one pixel, X,Y=D (replaces --near/--far).", rich_help_panel=CLOUD)] = None,
    edge_threshold: Annotated[float, typer.Option(help="Drop flying pixels whose relative depth jump exceeds this (0 keeps all).", rich_help_panel=CLOUD)] = 0.05,
    max_points: Annotated[int, typer.Option(help="Downsample clouds to at most this many points.", rich_help_panel=CLOUD)] = 2_000_000,
    normals: Annotated[bool, typer.Option("--normals", help="Add per-point normals to the PLY.", rich_help_panel=CLOUD)] = False,
    pc_stride: Annotated[int, typer.Option(help="For a video: a point cloud of every Nth output frame.", rich_help_panel=CLOUD)] = 10,
    start: Annotated[int, typer.Option(help="First video frame to read (0-based).", rich_help_panel=VIDEO)] = 0,
    max_frames: Annotated[Optional[int], typer.Option(help="Read at most this many video frames.", show_default=False, rich_help_panel=VIDEO)] = None,
    stride: Annotated[int, typer.Option(help="Read every Nth video frame (the depth video plays at the source frame rate / N).", rich_help_panel=VIDEO)] = 1,
    no_stabilize: Annotated[bool, typer.Option("--no-stabilize", help="Keep each frame's depth as predicted (it flickers) and colour each frame by its own range.", rich_help_panel=VIDEO)] = False,
) -> None:
    """Write a depth map for each photo, or a depth video for a video (clip.mp4 → clip_depth.mp4).

    A photo gets a colour PNG (near bright) and, on request, its raw output, a side-by-side picture and a point cloud; a depth video is stable from frame to frame. Raw files hold the model's own quantity, up to an unknown scale and shift: depth (large = far) or disparity (large = near), as `anydepth models` lists; the run's first line says which.

    Exit status: 0 all written, 1 some inputs failed (each named), 2 usage error, 130 interrupted (Ctrl+C).
    """
    from anydepth_cli.cli.progress import ImageProgress, VideoProgress, print_summary, print_video_summary
    from anydepth_cli.io.images import discover_inputs
    from anydepth_cli.io.video import probe_video
    from anydepth_cli.io.writers import DEFAULT_CMAP, available_cmaps, describe_kind, prepare_output_dir
    from anydepth_cli.pipelines.runtime import open_predictor, tile_config
    from anydepth_cli.pipelines.shards import resolve_shard, write_shard_summary

    if max_pixels < 1:
        raise UsageError("--max-pixels must be positive")
    if pc_stride < 1:
        raise UsageError("--pc-stride must be at least 1")
    if grayscale:
        cmap = "gray"
    elif cmap not in available_cmaps():
        raise UsageError(f"unknown --cmap {cmap!r}; try {DEFAULT_CMAP}, viridis, magma, turbo or gray")
    video = video_input(inputs)
    share = resolve_shard(shard)
    if video is not None and share is not None and share.index != 0:
        err.print(f"shard {share.name}: a video is not split; shard 0 of {share.count} processes {video.name}")
        return
    check_input_kind_options(video is not None, {
        "--confidence": confidence, "--skip-existing": skip_existing, "--raw npy": raw == Raw.npy,
        "--start": start != 0, "--max-frames": max_frames is not None, "--stride": stride != 1,
        "--no-stabilize": no_stabilize, "--raw npz": raw == Raw.npz, "--pc-stride": pc_stride != 10,
    })
    if video is not None:
        probe_video(video)  # an unreadable video fails before the model loads
    discovery = None if video else discover_inputs(inputs)
    prepare_output_dir(output)
    known_depth = parse_depth_at(depth_at)
    # Before the heavy imports (torch): weights that cannot be had are reported at once.
    predictor, label = open_predictor(model, checkpoint, arch, device, precision, batch_size, input_size,
                                      share.local_rank if share else None, backend.value, onnx)
    from anydepth_cli.pipelines.photos import OutputOptions, PointCloudOptions, TilingOptions, run_images
    from anydepth_cli.pipelines.video import VideoOptions, run_video

    cloud = None
    if pointcloud:
        cloud = PointCloudOptions(fov=fov, focal=focal, near=near, far=far, depth_at=known_depth,
                                  edge_threshold=edge_threshold or None, max_points=max_points, normals=normals)
    outputs = OutputOptions(output, cmap, invert, raw.value if raw else None, side_by_side, confidence, cloud)
    label += f" (outputs {describe_kind(predictor.output_kind)})"
    tiling = TilingOptions(tile.value, tile_config(predictor, tile_size, overlap))
    if video is not None:
        options = VideoOptions(output, cmap, invert, raw.value if raw else None, side_by_side, not no_stabilize,
                               start, max_frames, stride, pointcloud=cloud, pointcloud_stride=pc_stride)
        err.print(f"[dim]{label} on {predictor.device.type}, video {video.name}[/]")
        with VideoProgress() as video_progress:
            video_summary = run_video(video, predictor, options, tiling, video_progress, batch_size, max_pixels)
        print_video_summary(video_summary)
        return
    items = discovery.items
    if share is not None:
        items = share.select(items, key=lambda item: item.relative.as_posix())
    err.print(f"[dim]{label} on {predictor.device}, {len(items)} image(s)"
              + (f" (shard {share.name} of {len(discovery.items)}, from {share.source})" if share else "")
              + (f", {len(discovery.skipped)} other file(s) skipped" if discovery.skipped else "") + "[/]")
    with ImageProgress(len(items)) as progress:
        summary = run_images(items, predictor, outputs, tiling, progress, max_pixels, skip_existing, batch_size)
    print_summary(summary, output, len(discovery.skipped))
    if share is not None:
        record = write_shard_summary(share, output, [item.relative for item in items], summary.written,
                                     summary.skipped, summary.failed, summary.seconds)
        err.print(f"[dim]shard summary: {record}[/]")
    if summary.failed:
        raise typer.Exit(1)
