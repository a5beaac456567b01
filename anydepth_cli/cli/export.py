"""`anydepth export`: a model to ONNX, for ONNX Runtime (`anydepth predict --backend onnxruntime`) and other runtimes."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from anydepth_cli.cli.console import err

if TYPE_CHECKING:
    from anydepth_cli.inference.model_card import ModelCard


class Format(str, Enum):
    onnx = "onnx"


def export(
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="File to write. \\[default: NAME.onnx in the current folder]", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Registry model (see `anydepth models`). \\[default: anydepth-dav2-vitb]", show_default=False)] = None,
    checkpoint: Annotated[Optional[str], typer.Option(help="Your own .pth/.safetensors weights: a file, or hf://ORG/REPO/FILE on the Hub.")] = None,
    arch: Annotated[Optional[Path], typer.Option(help="JSON architecture of --checkpoint (a fixture .json works as is).")] = None,
    format: Annotated[Format, typer.Option("--format", help="Export format.")] = Format.onnx,
    precision: Annotated[str, typer.Option(help="fp32, fp16 (normalisations, sampling positions and the final activation stay fp32) or int8 (ONNX Runtime static quantisation, calibrated on --calibrate).")] = "fp32",
    calibrate: Annotated[Optional[Path], typer.Option(help="Folder of your own photos (a few dozen) that an int8 export's activation ranges are calibrated on.", show_default=False)] = None,
    input_size: Annotated[Optional[int], typer.Option(help="Size the network sees, in pixels (the shorter side for Depth Anything V2's pipeline, the longer for Depth Anything 3's), recorded in the model card as the default for `predict`. \\[default: the model's: 518, 504 for DA3, 512 for DINOv3]", show_default=False)] = None,
) -> None:
    """Export a model to ONNX for ONNX Runtime, with its card in the metadata.

    Opset 18: input `image` (B×3×H×W, normalised, H and W multiples of the patch size), output the model's depth or disparity after its final activation, before resizing; batch, height and width are dynamic.

    The model card (output kind, activation, patch size, mean/std, input size, architecture, version, precision, number of calibration photos) is stored in the ONNX metadata; the file is written only after onnx.checker passes and ONNX Runtime reproduces PyTorch (fp32 to 1e-3, fp16 to 2e-2 of the output's magnitude; int8 correlates with it by at least 0.9 on a calibration photo).

    Both runtimes are then timed on this CPU (three alternating calls each) and the timing is stored in the file: `anydepth predict PHOTO --onnx FILE` runs it on ONNX Runtime; `anydepth predict PHOTO -m NAME --onnx FILE` (the default --backend auto) runs ONNX Runtime only where it was timed faster than PyTorch on this CPU.
    """
    from anydepth_cli.export.onnx import export_model

    with err.status("preparing the export") as status:
        summary = export_model(model, checkpoint, arch, output, input_size, precision, calibrate,
                               lambda stage: status.update(stage))
    card = summary.card
    data = f" + {summary.external_data.name}" if summary.external_data else ""
    err.print(f"wrote {summary.path}{data} ({summary.size_bytes / 2**20:.1f} MB, {format.value}): {card.model}, "
              f"outputs {card.output} ({card.activation}), patch {card.patch_size}, input size {card.input_size}, "
              f"{_precision(card)}; ONNX Runtime matches PyTorch to {summary.max_difference:.1e} "
              f"(correlation {summary.correlation:.4f}) at {summary.check_shape[0]}×{summary.check_shape[1]}; "
              f"{summary.timing.describe()} on this CPU; "
              f"{summary.seconds:.0f} s",
              highlight=False, soft_wrap=True, markup=False)


def _precision(card: "ModelCard") -> str:
    calibrated = f" calibrated on {card.calibration_images} photo(s)" if card.precision == "int8" else ""
    return card.precision + calibrated
