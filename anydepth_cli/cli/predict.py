"""`anydepth predict`: depth maps for photos, depth videos for clips, and folders of both."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from anydepth_cli.cli.console import err
from anydepth_cli.cli.predict_options import Axes, Backend, Codec, Raw, Tile, check_input_kind_options, picture_cmap
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


def predict(
    inputs: Annotated[list[Path], typer.Argument(help="Photos, videos and folders of them (searched recursively).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the results; mirrors the input tree.", rich_help_panel=OUTPUT)] = DEFAULT_OUTPUT,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Registry model (see `anydepth models`). \\[default: anydepth-dav2-vitb]", show_default=False, rich_help_panel=MODEL)] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="Your own .pth/.safetensors weights: a file, or hf://ORG/REPO/FILE on the Hub.", rich_help_panel=MODEL)] = None,
    arch: Annotated[Optional[Path], typer.Option(help="JSON architecture of --checkpoint (a fixture .json works as is).", rich_help_panel=MODEL)] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Size the network sees, in pixels: the shorter side for Depth Anything V2's pipeline, the longer for Depth Anything 3's (see `models info`). \\[default: the model's: 518, 504 for DA3]", show_default=False, rich_help_panel=MODEL)] = None,
    backend: Annotated[Backend, typer.Option(help="auto: PyTorch, or ONNX Runtime for --onnx FILE given alone, or beside --model/--checkpoint where the export was timed faster on this CPU; torch; onnxruntime.", rich_help_panel=MODEL)] = Backend.auto,
    onnx: Annotated[Optional[Path], typer.Option(help="ONNX model made by `anydepth export -m NAME -o FILE`, which also times it against PyTorch on this CPU; it holds the weights.", rich_help_panel=MODEL)] = None,
    cmap: Annotated[Optional[str], typer.Option(help="Matplotlib colour map for the depth picture. \\[default: inferno]", show_default=False, rich_help_panel=OUTPUT)] = None,
    grayscale: Annotated[bool, typer.Option("--grayscale", help="Grey depth picture instead of a colour map.", rich_help_panel=OUTPUT)] = False,
    invert: Annotated[bool, typer.Option("--invert", help="Far bright, near dark.", rich_help_panel=OUTPUT)] = False,
    raw: Annotated[Optional[Raw], typer.Option(help="Also write the model's raw output, named for what it is (photo_depth.npy or photo_disparity.npy): npy float32 (photos), npz all frames in float16 (videos), exr 32-bit float OpenEXR, or png16 16-bit PNG scaled per image or frame (min, max and kind in its text chunks). A clip's exr or png16 frames are numbered files in a folder: clip_depth/ holds clip_depth.000001.exr, ...", rich_help_panel=OUTPUT)] = None,
    colorbar: Annotated[bool, typer.Option("--colorbar", help="Put a colour bar beside each depth picture: in metres for metric models, near and far for the others.", rich_help_panel=OUTPUT)] = False,
    side_by_side: Annotated[bool, typer.Option("--side-by-side", help="Also write the photo (or video) beside its depth picture.", rich_help_panel=OUTPUT)] = False,
    skip_existing: Annotated[bool, typer.Option("--skip-existing", help="Skip photos and clips whose outputs all exist (resume a folder).", rich_help_panel=OUTPUT)] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or mps.", rich_help_panel=RUN)] = "auto",
    precision: Annotated[str, typer.Option(help="auto, fp32, fp16 or bf16 (auto: bf16/fp16 on GPUs; on the CPU bf16 with AMX-BF16 or AVX512-BF16, else fp32).", rich_help_panel=RUN)] = "auto",
    batch_size: Annotated[int, typer.Option(help="Images (or tiles) per network call.", rich_help_panel=RUN)] = 4,
    max_pixels: Annotated[int, typer.Option(help="Refuse images with more pixels than this.", rich_help_panel=RUN)] = DEFAULT_MAX_PIXELS,
    shard: Annotated[Optional[str], typer.Option(metavar="K/N|auto|off", help="Process share K of N of the photos and of the clips (K from 0 to N-1; sorted by relative path), `auto` to take it from torchrun or srun, or `off`. \\[default: auto under torchrun/srun]", show_default=False, rich_help_panel=RUN)] = None,
    tile: Annotated[Tile, typer.Option(help="Tiled full-resolution inference: `on` (or bare --tile), `off`, or `auto` (images whose shorter side is over twice the input size).", rich_help_panel=TILES)] = Tile.auto,
    tile_size: Annotated[Optional[int], typer.Option(help="Tile side in image pixels. \\[default: 2 × input size]", show_default=False, rich_help_panel=TILES)] = None,
    overlap: Annotated[Optional[int], typer.Option(help="Pixels neighbouring tiles share. \\[default: tile size / 4]", show_default=False, rich_help_panel=TILES)] = None,
    confidence: Annotated[bool, typer.Option("--confidence", help="Also write a per-pixel confidence map (from tile agreement).", rich_help_panel=TILES)] = False,
    pointcloud: Annotated[bool, typer.Option("--pointcloud", help="Also write a coloured PLY point cloud.", rich_help_panel=CLOUD)] = False,
    mesh: Annotated[bool, typer.Option("--mesh", help="Also write a coloured triangle mesh of the depth map (photo_mesh.ply), cut at depth discontinuities (--edge-threshold).", rich_help_panel=CLOUD)] = False,
    glb: Annotated[bool, typer.Option("--glb", help="Write the cloud and mesh as binary glTF (.glb, vertex colours, camera in the scene's extras) instead of PLY; needs the extra `mesh` (trimesh).", rich_help_panel=CLOUD)] = False,
    axes: Annotated[Axes, typer.Option(help="Frame of clouds and meshes: opengl (x right, y up, z toward the viewer) or opencv (x right, y down, z forward).", rich_help_panel=CLOUD)] = Axes.opengl,
    fov: Annotated[Optional[float], typer.Option(help="Horizontal field of view in degrees, in (0, 180). \\[default: the photo's EXIF 35 mm-equivalent focal length, converted on the diagonal, else 60]", show_default=False, rich_help_panel=CLOUD)] = None,
    focal: Annotated[Optional[float], typer.Option(help="Focal length in pixels, > 0 (overrides --fov and EXIF). Clouds and metric models also write photo_camera.json: fx, fy, cx, cy, units, model, focal source.", rich_help_panel=CLOUD)] = None,
    near: Annotated[Optional[float], typer.Option(help="Depth of the nearest content, in scene units. \\[default: 1]", show_default=False, rich_help_panel=CLOUD)] = None,
    far: Annotated[Optional[float], typer.Option(help="Depth of the farthest content. \\[default: 10]", show_default=False, rich_help_panel=CLOUD)] = None,
    depth_at: Annotated[Optional[str], typer.Option(help="Known depth at one pixel, X,Y=D (replaces --near/--far).", rich_help_panel=CLOUD)] = None,
    metric_from: Annotated[Optional[str], typer.Option("--metric-from", metavar="MODEL", help="Anchor the model's relative maps to a metric model's (dav2-metric-*) maps of the same photos: a scale and shift fitted in the model's own space over the pixels both trust, so the maps, raw files and clouds are in metres with the model's detail.", rich_help_panel=CLOUD)] = None,
    metric_arch: Annotated[Optional[Path], typer.Option("--metric-arch", help="JSON architecture when --metric-from is a checkpoint file of your own.", rich_help_panel=CLOUD)] = None,
    metric: Annotated[bool, typer.Option("--metric", help="Insist on metres: refused for a relative model without --metric-from.", rich_help_panel=CLOUD)] = False,
    edge_threshold: Annotated[float, typer.Option(help="Drop flying pixels whose relative depth jump exceeds this (0 keeps all).", rich_help_panel=CLOUD)] = 0.05,
    max_points: Annotated[int, typer.Option(help="Downsample clouds to at most this many points.", rich_help_panel=CLOUD)] = 2_000_000,
    normals: Annotated[bool, typer.Option("--normals", help="Add per-point normals to the PLY.", rich_help_panel=CLOUD)] = False,
    pc_stride: Annotated[int, typer.Option(help="For a video: a point cloud of every Nth output frame.", rich_help_panel=CLOUD)] = 10,
    start: Annotated[int, typer.Option(help="First video frame to read (0-based).", rich_help_panel=VIDEO)] = 0,
    max_frames: Annotated[Optional[int], typer.Option(help="Read at most this many video frames.", show_default=False, rich_help_panel=VIDEO)] = None,
    stride: Annotated[int, typer.Option(help="Read every Nth video frame (the depth video plays at the source frame rate / N).", rich_help_panel=VIDEO)] = 1,
    no_stabilize: Annotated[bool, typer.Option("--no-stabilize", help="Keep each frame's depth as predicted (it flickers) and colour each frame by its own range.", rich_help_panel=VIDEO)] = False,
    codec: Annotated[Optional[Codec], typer.Option(help="Depth video format: h264 (MP4 that browsers, notebooks and chat tools play), mp4v (MPEG-4 Part 2 MP4 for desktop players; fastest), or ffv1 (lossless 8-bit grey in MKV, for further processing). \\[default: h264]", show_default=False, rich_help_panel=VIDEO)] = None,
    server: Annotated[Optional[str], typer.Option(metavar="URL", help="Run the network in a running `anydepth serve` at URL (its model; the files written are the same as a local run's).", rich_help_panel=MODEL)] = None,
    token: Annotated[Optional[str], typer.Option(envvar="ANYDEPTH_TOKEN", help="Bearer token for --server.", show_default=False, rich_help_panel=MODEL)] = None,
) -> None:
    """Write a depth map for each photo and a depth video for each video (clip.mp4 → clip_depth.mp4).

    A photo gets a colour PNG (near bright) and, on request, its raw output, a side-by-side picture and a point cloud; a depth video is stable from frame to frame. Raw files hold the model's own quantity, up to an unknown scale and shift: depth (large = far) or disparity (large = near), as `anydepth models` lists; the run's first line says which.

    Exit status: 0 all written, 1 some inputs failed (each named), 2 usage error, 130 interrupted (Ctrl+C).
    """
    from anydepth_cli.cli.progress import ImageProgress, VideoProgress, describe_inputs, print_summary
    from anydepth_cli.geometry.camera import check_camera_options
    from anydepth_cli.geometry.depth_rule import parse_depth_at
    from anydepth_cli.pipelines.geometry import CameraOptions, PointCloudOptions
    from anydepth_cli.io.encoders import resolve_codec
    from anydepth_cli.io.images import discover_inputs
    from anydepth_cli.io.video import VIDEO_EXTENSIONS, check_selection, is_video, probe_video
    from anydepth_cli.io.writers import claim_output_dir, describe_kind, prepare_output_dir
    from anydepth_cli.pipelines.runtime import anchored_predictor, check_metric_options, open_predictor, tile_config
    from anydepth_cli.pipelines.shards import relative_key, resolve_shard, write_shard_summary

    if max_pixels < 1:
        raise UsageError("--max-pixels must be positive")
    if pc_stride < 1:
        raise UsageError("--pc-stride must be at least 1")
    check_camera_options(fov, focal)
    if glb:
        from anydepth_cli.io.glb import check_glb_available

        if not (pointcloud or mesh):
            raise UsageError("--glb writes the cloud or the mesh: add --pointcloud or --mesh")
        check_glb_available()
    if metric_arch is not None and metric_from is None:
        raise UsageError("--metric-arch describes a checkpoint given as --metric-from FILE")
    discovery = discover_inputs(inputs, also=VIDEO_EXTENSIONS)
    photos = [item for item in discovery.items if not is_video(item.path)]
    clips = [item for item in discovery.items if is_video(item.path)]
    check_input_kind_options(bool(photos), bool(clips), {
        "--confidence": confidence, "--raw npy": raw == Raw.npy, "--colorbar": colorbar, "--mesh": mesh, "--glb": glb,
        "--axes": axes != Axes.opengl, "--start": start != 0,
        "--max-frames": max_frames is not None, "--stride": stride != 1, "--no-stabilize": no_stabilize,
        "--raw npz": raw == Raw.npz, "--pc-stride": pc_stride != 10, "--codec": codec is not None,
    })
    cmap = picture_cmap(cmap, grayscale, codec, bool(photos))
    video_codec, codec_note = Codec.h264.value, None
    if clips:
        check_selection(start, max_frames, stride)
        video_codec, codec_note = resolve_codec((codec or Codec.h264).value)
    share = resolve_shard(shard)
    if share is not None:  # photos and clips are dealt separately: a clip weighs as much as many photos
        photos, clips = share.select(photos, relative_key), share.select(clips, relative_key)
    if len(discovery.items) == 1 and clips:
        probe_video(clips[0].path, start)  # a lone clip that cannot be read fails before the model loads
    prepare_output_dir(output)
    known_depth = parse_depth_at(depth_at)
    if share is not None and not photos and not clips:
        err.print(f"[dim]shard {share.name}: nothing to do ({len(discovery.items)} input(s), {share.count} shards)[/]")
        write_shard_summary(share, output, [], 0, 0, [], 0.0)
        return
    raw_format = raw.value if raw else None
    with claim_output_dir(output, {output, *(output / item.relative.parent for item in [*photos, *clips])}) as cleaned:
        # Before the heavy imports (torch): weights that cannot be had are reported at once.
        if server is not None:
            from anydepth_cli.serve.client import open_remote

            local_only = {"--model": model, "--checkpoint": checkpoint, "--arch": arch, "--onnx": onnx,
                          "--input-size": input_size, "--backend": backend != Backend.auto,
                          "--device": device != "auto", "--precision": precision != "auto"}
            predictor, label = open_remote(server, token, batch_size, [name for name, v in local_only.items() if v])
            recorded_name = predictor.name  # camera records name the model, wherever it ran
        else:
            recorded_name = None
            predictor, label = open_predictor(model, checkpoint, arch, device, precision, batch_size, input_size,
                                              share.local_rank if share else None, backend.value, onnx)
        if metric_from is not None:
            predictor, label = anchored_predictor(predictor, label, metric_from, metric_arch, device, precision,
                                                  batch_size, share.local_rank if share else None)
        check_metric_options(predictor.output_kind, label, metric, (pointcloud or mesh) and (near, far, known_depth))
        from anydepth_cli.inference.precision import slow_precision_note
        from anydepth_cli.pipelines.photos import OutputOptions, Summary, TilingOptions, run_images
        from anydepth_cli.pipelines.video import ClipsSummary, VideoOptions, run_videos

        cloud = None
        if pointcloud or mesh:
            cloud = PointCloudOptions(fov=fov, focal=focal, near=near, far=far, depth_at=known_depth,
                                      edge_threshold=edge_threshold or None, max_points=max_points, normals=normals)
        tiling = TilingOptions(tile.value, tile_config(predictor, tile_size, overlap))
        err.print(f"[dim]{label} (outputs {describe_kind(predictor.output_kind)}) on {predictor.device}, "
                  f"{describe_inputs(len(photos), len(clips), len(discovery.items), len(discovery.skipped), share)}[/]")
        if codec_note:
            err.print(f"[yellow]note:[/] {escape(codec_note)}", highlight=False)
        if slow := slow_precision_note(getattr(predictor, "dtype", None), predictor.device):
            err.print(f"[yellow]note:[/] {escape(slow)}", highlight=False)
        photo_summary, clip_summary = Summary(), ClipsSummary()
        anchor = predictor if metric_from is not None else None
        camera = CameraOptions(fov, focal, recorded_name or label, predictor.max_depth, anchor, pointcloud, mesh, glb,
                               axes.value)
        if photos:
            geometry = pointcloud or mesh or predictor.output_kind == "metric"
            outputs = OutputOptions(output, cmap, invert, raw_format, side_by_side, confidence, cloud, colorbar,
                                    camera if geometry else None)
            with ImageProgress(len(photos)) as progress:
                photo_summary = run_images(photos, predictor, outputs, tiling, progress, max_pixels, skip_existing,
                                           batch_size)
        if clips:
            options = VideoOptions(output, cmap, invert, raw_format, side_by_side, not no_stabilize, start, max_frames,
                                   stride, video_codec, pointcloud=cloud if pointcloud else None,
                                   pointcloud_stride=pc_stride, camera=camera)
            with VideoProgress() as clip_progress:
                clip_summary = run_videos(clips, predictor, options, tiling, clip_progress, batch_size, max_pixels,
                                          skip_existing)
    print_summary(photo_summary, clip_summary, output, len(discovery.skipped), cleaned)
    captured = getattr(predictor, "capture_seconds", 0.0)
    if captured:
        err.print(f"[dim]CUDA graphs: {captured:.2f} s of that capturing, once per input shape[/]")
    failed = photo_summary.failed + clip_summary.failed
    if share is not None:
        record = write_shard_summary(share, output, [item.relative for item in [*photos, *clips]],
                                     photo_summary.written + len(clip_summary.written),
                                     photo_summary.skipped + clip_summary.skipped, failed,
                                     photo_summary.seconds + clip_summary.seconds)
        err.print(f"[dim]shard summary: {record}[/]")
    if failed:
        raise typer.Exit(1)
