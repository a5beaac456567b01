"""The Python API: load a model once, then predict maps of photos given as paths, PIL images or arrays.

    import anydepth_cli
    model = anydepth_cli.load("anydepth-dav2-vitb")
    result = model.predict("photo.jpg")

The command line runs the same functions: `open_predictor` and `tile_config` to get a predictor,
`depth_picture` for pictures, `make_point_cloud` for clouds.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
from PIL import Image

from anydepth_cli.errors import UsageError
from anydepth_cli.geometry.pointcloud import PointCloud
from anydepth_cli.inference.engine import Engine, Loaded, Prediction
from anydepth_cli.inference.predictor import DepthPredictor
from anydepth_cli.io.images import pil_to_rgb, read_image
from anydepth_cli.io.writers import DEFAULT_CMAP
from anydepth_cli.pipelines.geometry import PointCloudOptions, make_point_cloud
from anydepth_cli.pipelines.photos import depth_picture
from anydepth_cli.pipelines.runtime import open_predictor, tile_config

ImageLike = Union[str, Path, Image.Image, np.ndarray]
"""A path to an image file, a PIL image, or an RGB array (H×W×3, uint8 or float in [0, 1])."""

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")


@dataclass(frozen=True)
class DepthResult:
    """One photo's map: the model's own quantity (`kind`: depth, large = far, or disparity, large = near, up to an
    unknown scale and shift; or metric, depth in metres), float32 H×W at the photo's size; `confidence` from tiled
    runs."""

    map: np.ndarray
    kind: str
    image: np.ndarray
    confidence: np.ndarray | None = None

    def colorize(self, cmap: str = DEFAULT_CMAP, invert: bool = False) -> np.ndarray:
        """The depth picture, RGB uint8 H×W×3: near bright (far bright with `invert`)."""
        return depth_picture(self.map, self.kind, cmap, invert)

    def point_cloud(self, fov: float | None = None, focal: float | None = None, near: float | None = None,
                    far: float | None = None, depth_at: tuple[int, int, float] | None = None,
                    edge_threshold: float | None = 0.05, max_points: int | None = 2_000_000,
                    normals: bool = False) -> PointCloud:
        """A coloured point cloud (x right, y up, z toward the viewer), with the options of `--pointcloud`."""
        options = PointCloudOptions(fov, focal, near, far, depth_at, edge_threshold, max_points, normals)
        return make_point_cloud(self.image, self.map, self.kind, options)[0]


class DepthModel:
    """A loaded model: `predict`, `predict_batch`, `predict_many` and `predict_tiled` turn photos into `DepthResult`s."""

    def __init__(self, predictor: DepthPredictor, label: str) -> None:
        self.predictor = predictor
        self.label = label

    @property
    def kind(self) -> str:
        """What the model outputs: `depth`, `disparity` or `metric`."""
        return self.predictor.output_kind

    def predict(self, image: ImageLike) -> DepthResult:
        """The map of one photo at its own size."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[ImageLike]) -> list[DepthResult]:
        """The maps of several photos, run through the network in batches of equal network size."""
        return list(self.predict_many(images))

    def predict_many(self, images: Iterable[ImageLike]) -> Iterator[DepthResult]:
        """The maps of any number of photos, in order, through the streaming engine: decoded ahead in threads,
        predicted in batches, with memory bounded however many there are. Raises the first photo's error."""
        return self._stream(images, Engine(self.predictor, self.predictor.batch_size))

    def predict_tiled(self, image: ImageLike, tile_size: int | None = None, overlap: int | None = None,
                      confidence: bool = False) -> DepthResult:
        """A full-resolution map from overlapping tiles aligned to a whole-image pass (see `--tile`)."""
        config = tile_config(self.predictor, tile_size, overlap)
        return list(self._stream([image], Engine(self.predictor, tiling=lambda _: config, confidence=confidence)))[0]

    def _stream(self, images: Iterable[ImageLike], engine: Engine) -> Iterator[DepthResult]:
        def finish(_: ImageLike, loaded: Loaded, prediction: Prediction) -> DepthResult:
            return DepthResult(prediction.values, self.kind, loaded.image, prediction.confidence)

        for outcome in engine.stream(images, lambda image: Loaded(as_rgb(image)), finish):
            if outcome.error is not None:
                raise outcome.error
            yield outcome.result


def load(model_or_checkpoint: str | Path | None = None, arch: str | Path | None = None, device: str = "auto",
         precision: str = "auto", batch_size: int = 4, input_size: int | None = None) -> DepthModel:
    """A registry model by name (default `anydepth-dav2-vitb`, downloaded into the Hub cache), or your own
    weights: a `.pth`/`.safetensors` file or `hf://ORG/REPO/FILE` with its architecture JSON `arch`."""
    name, checkpoint = None, None
    if model_or_checkpoint is not None:
        text = str(model_or_checkpoint)
        is_file = arch is not None or text.startswith("hf://") or Path(text).suffix in CHECKPOINT_SUFFIXES
        name, checkpoint = (None, text) if is_file else (text, None)
    predictor, label = open_predictor(name, checkpoint, Path(arch) if arch is not None else None, device,
                                      precision, batch_size, input_size)
    return DepthModel(predictor, label)


def as_rgb(image: ImageLike) -> np.ndarray:
    """An RGB array (H×W×3, uint8 or float32 in [0, 1]) from a path, a PIL image or an array."""
    if isinstance(image, (str, Path)):
        return read_image(Path(image), None)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image)
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise UsageError(f"an image array must be H×W×3, not {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise UsageError(f"an image array must be uint8 or float in [0, 1], not {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)
