"""The whole pipeline (resize in, network, resize back) equals each model family's own published inference
(`reference_pipelines`) on photos of awkward sizes, through every path that brings a network map back: single photos
and batches of the Python API, tiles before blending, video frames, `eval`'s ground-truth sizes; ONNX Runtime is
held to it in test_onnx.py.

The networks are the shared fixtures standing in for each family: `tiny_dav2_dpt` for the `dav2-dpt-*` models,
`tiny_dav2_sdt` for `anydepth-dav2-vitb`, `tiny_da3_sdt` for `anydepth-da3-vitl`, `tests/data/tiny_vggt_sdt` (VGGT's aggregator with an SDT head) for
networks on `vggt-1b`. The two Depth Anything V2 ones
start dead (their outputs sit below the final ReLU), so their last bias is lifted until the maps vary. Single photos
are batches of one (a network call per network size). Input sizes are small to keep the test fast; the families'
default sizes are checked on the geometry alone.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import anydepth_cli
from anydepth_cli.evaluation.presets import get_preset
from anydepth_cli.evaluation.folder_run import run_eval
from anydepth_cli.datasets import generic
from anydepth_cli.datasets.archive import FolderFiles, Sample
from anydepth_cli.datasets.family import Reader, SampleSet
from anydepth_cli.inference.preprocess import RESIZINGS, prepare_batch, resize_map, resizing_of
from anydepth_cli.inference.tiling import default_tile_config
from anydepth_cli.models.config import RESIZES, NetworkConfig
from anydepth_cli.models.registry import MODELS
from anydepth_cli.pipelines.photos import TilingOptions
from anydepth_cli.pipelines.video import VideoOptions, run_video
from anydepth_cli.weights.checkpoint import read_state_dict
from fixtures_dir import fixtures_dir
from reference_pipelines import SIZES, assert_agrees, awkward_photos, published_inference, vggt_network_input
from test_video import Recorder, make_clip
from vggt_fixture import vggt_state, write_vggt_arch

INPUT_SIZE = {"dav2": 70, "da3": 100, "vggt": 70}
"""Small inputs (DA3's not a multiple of the patch, so both of its rounding steps act)."""
FAMILIES = {  # fixture → (the registry models it stands for, how much its last bias is lifted)
    "tiny_dav2_dpt": (("dav2-dpt-vits", "dav2-dpt-vitb", "dav2-dpt-vitl"), 8.0),
    "tiny_dav2_sdt": (("anydepth-dav2-vitb",), 8.0),
    "tiny_da3_sdt": (("anydepth-da3-vitl",), 0.0),
}
VGGT = "tiny_vggt_sdt"
VGGT_LIFT = 0.01
"""Raises the VGGT fixture's head above the final ReLU on the sample photo (its outputs span about 0.02)."""


def lifted_checkpoint(name: str, lift: float, folder: Path) -> Path:
    """The fixture's checkpoint with its head's last bias raised by `lift` (the fixture's own file when 0)."""
    source = fixtures_dir() / f"{name}.pth"
    if not lift:
        return source
    state = read_state_dict(source)
    last = [key for key in state if key.endswith(".bias")][-1]
    state[last] = state[last] + lift
    torch.save(state, folder / f"{name}.pth")
    return folder / f"{name}.pth"


def lifted_vggt_checkpoint(folder: Path) -> Path:
    """The VGGT fixture's checkpoint with its head's last bias raised by VGGT_LIFT."""
    state = vggt_state()
    last = [key for key in state if key.endswith(".bias")][-1]
    state[last] = state[last] + VGGT_LIFT
    torch.save(state, folder / f"{VGGT}.pth")
    return folder / f"{VGGT}.pth"


class Family:
    """A fixture network run two ways: anydepth's Python API and the family's published reference."""

    def __init__(self, name: str, folder: Path) -> None:
        if name == VGGT:
            arch, checkpoint = write_vggt_arch(folder), lifted_vggt_checkpoint(folder)
        else:
            arch = fixtures_dir() / f"{name}.json"
            checkpoint = lifted_checkpoint(name, FAMILIES[name][1], folder)
        self.config = NetworkConfig.from_file(arch)
        self.input_size = INPUT_SIZE[self.config.resize]
        self.model = anydepth_cli.load(checkpoint, arch=arch, device="cpu", precision="fp32",
                                       input_size=self.input_size)
        self.network = self.model.predictor.network  # the one shared part: what is tested is the resizing around it

    def reference(self, rgb: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        return published_inference(self.config.resize, self.network, rgb, self.input_size, self.config.patch_size,
                                   size)


@pytest.fixture(scope="module")
def family(request, tmp_path_factory) -> Family:
    return Family(request.param, tmp_path_factory.mktemp(request.param))


def test_every_model_declares_its_familys_pipeline_and_every_pipeline_is_carried_out():
    assert set(RESIZES) == set(RESIZINGS)
    for name, (models, _) in FAMILIES.items():
        config = NetworkConfig.from_file(fixtures_dir() / f"{name}.json")
        for model in models:
            assert MODELS[model].config.resize == config.resize == ("da3" if "da3" in model else "dav2")
            assert MODELS[model].config.layout == config.layout
    assert {spec.name: spec.input_size for spec in MODELS.values()} == {
        "anydepth-dav2-vitb": 518, "anydepth-da3-vitl": 504, "dav2-dpt-vits": 518, "dav2-dpt-vitb": 518,
        "dav2-dpt-vitl": 518, **{name: 518 for name in MODELS if name.startswith("dav2-metric-")}}
    assert all("publish no inference code" in MODELS[name].resize_origin
               for name in ("anydepth-dav2-vitb", "anydepth-da3-vitl"))


def test_the_default_sizes_are_the_families_own():
    """At the defaults: Depth Anything V2's 518 px shorter side; Depth Anything 3's 504 px longer side (its
    documented example: 1200×1600 → 378×504)."""
    dav2 = resizing_of(MODELS["dav2-dpt-vitl"].config, MODELS["dav2-dpt-vitl"].input_size)
    da3 = resizing_of(MODELS["anydepth-da3-vitl"].config, MODELS["anydepth-da3-vitl"].input_size)
    assert [dav2.network_size(*size) for size in SIZES] == [(1400, 518), (518, 686), (1610, 518), (518, 686),
                                                            (518, 700)]
    assert da3.network_size(1200, 1600) == (378, 504)
    assert [da3.network_size(*size) for size in SIZES] == [(504, 182), (378, 504), (504, 168), (378, 504),
                                                           (378, 504)]


def test_vggts_size_is_its_own_and_its_input_is_its_preprocessing_less_the_crop(sample_photo):
    """VGGT's rule: the width at 518, the height scaled and rounded to a multiple of 14 (at least one patch); the
    network input equals VGGT's `crop`-mode input where that keeps every row, and holds it as its middle rows
    where VGGT crops a tall photo."""
    vggt = RESIZINGS["vggt"](518, 14)
    assert [vggt.network_size(*size) for size in SIZES] == [(1400, 518), (392, 518), (1610, 518), (392, 518),
                                                            (378, 518)]
    assert vggt.network_size(10, 5000) == (14, 518)
    for image in awkward_photos(sample_photo)[:4]:
        ours = prepare_batch([image], vggt)
        theirs = vggt_network_input(image)
        if ours.shape[-2] > 518:
            start = (ours.shape[-2] - 518) // 2
            ours = ours[..., start:start + 518, :]
        assert ours.shape == theirs.shape and torch.equal(ours, theirs)


@pytest.mark.parametrize("family", [*FAMILIES, VGGT], indirect=True)
def test_single_photos_and_batches_match_the_familys_published_inference(family, sample_photo):
    images = awkward_photos(sample_photo)
    references = [family.reference(image) for image in images]
    floor = family.config.output_floor
    batch = family.model.predict_batch([*images, images[3]])  # the two 4:3 photos share one network call
    for result, reference in zip(batch, [*references, references[3]]):
        assert_agrees(result.map, reference, floor)


@pytest.mark.parametrize("family", ["tiny_dav2_dpt"], indirect=True)
def test_tiles_are_brought_back_by_the_familys_rule_before_blending(family, sample_photo, monkeypatch):
    image = awkward_photos(sample_photo)[1][:300, :403]
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    predict = family.model.predictor.predict_batch

    def recording(images, sizes=None):
        maps = predict(images, sizes)
        seen.extend(zip(images, maps))
        return maps

    monkeypatch.setattr(family.model.predictor, "predict_batch", recording)
    result = family.model.predict_tiled(image, tile_size=200, overlap=50)
    assert result.map.shape == image.shape[:2] and len(seen) == 7  # the whole photo, then 2 × 3 tiles
    for crop, values in seen:
        assert_agrees(values, family.reference(crop), family.config.output_floor)


@pytest.mark.parametrize("family", ["tiny_dav2_sdt"], indirect=True)
def test_video_frames_are_the_familys_maps(family, tmp_path, monkeypatch):
    clip = tmp_path / "clip.mp4"
    make_clip(clip, frames=3, size=(98, 62))
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    predictor = family.model.predictor
    predict = predictor.predict_batch

    def recording(images, sizes=None):
        maps = predict(images, sizes)
        seen.extend(zip(images, maps))
        return maps

    monkeypatch.setattr(predictor, "predict_batch", recording)
    options = VideoOptions(tmp_path / "out", raw="npz", stabilize=False)
    run_video(clip, predictor, options, TilingOptions("off", default_tile_config(family.input_size)), Recorder(),
              batch_size=2)
    written = np.load(tmp_path / "out" / "clip_depth.npz")["depth"].astype(np.float32)
    assert len(seen) == len(written) == 3
    for (frame, values), saved in zip(seen, written):
        assert_agrees(values, family.reference(frame), family.config.output_floor)
        assert np.abs(saved - values).max() <= 1e-3 * np.abs(values).max()  # stored as float16


@pytest.mark.parametrize("family", ["tiny_da3_sdt"], indirect=True)
def test_eval_brings_maps_straight_to_the_ground_truths_size(family, sample_photo, tmp_path, monkeypatch):
    image = awkward_photos(sample_photo)[0]
    cv2.imwrite(str(tmp_path / "photo.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    gt = np.full((450, 167), 2.0, dtype=np.float32)  # half the photo's size, with a different rounding
    gt[:, :80] = 5.0
    np.save(tmp_path / "photo_depth.npy", gt)
    asked: list = []
    predict = family.model.predictor.predict_batch

    def recording(images, sizes=None):
        asked.append(sizes)
        return predict(images, sizes)

    monkeypatch.setattr(family.model.predictor, "predict_batch", recording)
    run_eval(SampleSet(Reader(generic.family(), FolderFiles(tmp_path)), [Sample("photo.png", "photo_depth.npy")]),
             {"m": family.model.predictor},
             get_preset("default"))
    assert asked == [[(450, 167)]]
    (values,) = predict([image], [(450, 167)])
    assert_agrees(values, family.reference(image, size=(450, 167)), family.config.output_floor)


def test_the_training_loss_resizes_by_the_models_rule_and_keeps_gradients():
    output = torch.rand(2, 1, 9, 13, dtype=torch.float64, requires_grad=True)
    for resize, corners in (("dav2", True), ("da3", False), ("vggt", True)):
        config = NetworkConfig(embed=8, depth=4, heads=2, layers=(0, 1, 2, 3), head="sdt", resize=resize)
        resized = resize_map(output, (31, 20), config)
        expected = torch.nn.functional.interpolate(output, (31, 20), mode="bilinear", align_corners=corners)[:, 0]
        assert resized.dtype == torch.float64 and torch.equal(resized, expected)
        resized.sum().backward()
        assert output.grad is not None and output.grad.abs().sum() > 0
        output.grad = None
