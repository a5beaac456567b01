"""The ONNX Runtime predictor: an exported network run by ONNX Runtime behind the same batching as PyTorch's."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Mapping

import torch

from anydepth_cli.errors import MissingExtraError, UsageError
from anydepth_cli.inference.memory import activation_bytes_per_token
from anydepth_cli.inference.model_card import ModelCard
from anydepth_cli.inference.predictor import BatchedPredictor, check_predictor_settings
from anydepth_cli.inference.preprocess import resizing_of
from anydepth_cli.models.config import NetworkConfig

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
TIMING_KEY = "anydepth.cpu_timing"
FASTER_BY = 0.05
"""How much less time ONNX Runtime must have taken for `--backend auto` to run it instead of PyTorch."""


def cpu_name() -> str:
    """This machine's processor model (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class CpuTiming:
    """Median seconds per network call of PyTorch's fast path and of ONNX Runtime, timed alternately on one CPU
    (its model and thread count) when the model was exported."""

    cpu: str
    threads: int
    shape: tuple[int, int]
    torch: float
    onnxruntime: float

    def to_metadata(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_metadata(cls, props: Mapping[str, str]) -> "CpuTiming | None":
        """The timing an export recorded, or None (none recorded, or unreadable)."""
        try:
            values = json.loads(props[TIMING_KEY])
            return cls(str(values["cpu"]), int(values["threads"]), tuple(values["shape"]), float(values["torch"]),
                       float(values["onnxruntime"]))
        except (KeyError, TypeError, ValueError):
            return None

    def from_here(self) -> bool:
        """Whether it was timed on this machine's processor model with the threads PyTorch uses now."""
        return self.cpu == cpu_name() and self.threads == torch.get_num_threads()

    def onnxruntime_faster(self) -> bool:
        return self.onnxruntime <= (1 - FASTER_BY) * self.torch

    def describe(self) -> str:
        return (f"ONNX Runtime {self.onnxruntime:.2f} s, PyTorch {self.torch:.2f} s per "
                f"{self.shape[0]}×{self.shape[1]} call on {self.threads} thread(s)")


def import_onnxruntime() -> ModuleType:
    """The onnxruntime module, or a one-line error saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise MissingExtraError("onnxruntime") from None
    return onnxruntime


def select_provider(device: str, available: list[str]) -> str:
    """The execution provider for `--device`: `auto` takes CUDA where this onnxruntime build has it, else the CPU."""
    if device == "auto":
        return PROVIDERS["cuda"] if PROVIDERS["cuda"] in available else PROVIDERS["cpu"]
    if device not in PROVIDERS:
        raise UsageError(f"--backend onnxruntime runs on --device auto, cpu or cuda, not {device}")
    if PROVIDERS[device] not in available:
        raise UsageError(f"this onnxruntime build has no {PROVIDERS[device]} (it has {', '.join(available)}); "
                         "install onnxruntime-gpu or use --device cpu")
    return PROVIDERS[device]


class OnnxPredictor(BatchedPredictor):
    """An `anydepth export`ed model in an ONNX Runtime session; output kind, patch and input size come from its card,
    the resizing from the architecture in it (`resize`; a file exported before it was declared: the encoder family's).

    Batches are prepared and outputs resized on the CPU, as tensors, by the shared code; the session runs on the
    provider `--device` selects, with as many threads as PyTorch uses.
    """

    def __init__(self, path: Path, input_size: int | None = None, device: str = "auto", batch_size: int = 4) -> None:
        ort = import_onnxruntime()
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"ONNX model not found: {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        self.provider = select_provider(device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(path), options, providers=[self.provider])
        except Exception as exc:  # onnxruntime raises its own unrelated types for unreadable or invalid models
            lines = str(exc).strip().splitlines()
            raise UsageError(f"ONNX Runtime cannot open {path.name}: {lines[-1] if lines else type(exc).__name__}") from None
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.card = ModelCard.from_metadata(metadata, path.name)
        self.cpu_timing = CpuTiming.from_metadata(metadata)
        self.input_size = input_size or self.card.input_size
        check_predictor_settings(self.input_size, self.card.patch_size, batch_size)
        self.patch_size = self.card.patch_size
        self.output_kind = self.card.output
        config = NetworkConfig.from_dict(self.card.architecture)
        self.max_depth = config.max_depth
        self.resizing = resizing_of(config, self.input_size)
        self.bytes_per_token = activation_bytes_per_token(config)
        self.batch_size = batch_size
        self.device = torch.device("cpu")
        self.input_name = self.session.get_inputs()[0].name

    def run(self, batch: torch.Tensor) -> torch.Tensor:
        """The session's output for one batch."""
        (output,) = self.session.run(None, {self.input_name: batch.numpy()})
        return torch.from_numpy(output)
