"""Facts any real depth model satisfies on the bundled sample photo, checked against what the model declares.

On the public-domain photo of Grace Hopper that ships with matplotlib (also `assets/grace_hopper.jpg`), with
its hand-drawn mask `samples/grace_hopper_foreground.png` beside this module
(white: the person, black: clearly backdrop, grey: ignored) the map must be finite, not
constant, at or above the declared activation's floor, nearer on the person than on the
backdrop under the declared output kind, and the horizontally flipped photo must give the
flipped map.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from anydepth_cli.errors import AnyDepthError, UsageError
from anydepth_cli.inference.predictor import MapPredictor
from anydepth_cli.io.images import read_image
from anydepth_cli.models.config import ACTIVATIONS, NetworkConfig, space_of

FACT_NAMES = ("finite", "not constant", "activation range", "foreground nearer", "flip consistent")
"""The facts checked, in the order they are reported."""
MASK = Path(__file__).resolve().parent / "samples" / "grace_hopper_foreground.png"
FOREGROUND_LEVEL, BACKGROUND_LEVEL = 255, 0
"""Mask values of the person and of the backdrop; anything else is ignored."""
MIN_MARGIN = 0.05
"""How much nearer the foreground's median must be, as a fraction of the map's 2–98 % range."""
MIN_FLIP_CORRELATION = 0.9
FLOOR_TOLERANCE = 1e-5
"""How far below the activation's floor a value may be (half-precision rounding of 0.001 is under 4e-6)."""
CONSTANT_SPREAD = 1e-3
"""A map whose 1–99 % spread is at most this fraction of its largest magnitude counts as constant."""


@dataclass(frozen=True)
class Sample:
    """A bundled photo and its foreground mask (same size)."""

    photo: Path
    mask: Path


def sample_photo() -> Path:
    """matplotlib's copy of the sample photo (a dependency, so every install has it)."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


SAMPLE = Sample(sample_photo(), MASK)


@dataclass(frozen=True)
class SampleImage:
    """A sample's RGB pixels and its foreground and background regions."""

    image: np.ndarray
    foreground: np.ndarray
    background: np.ndarray


@dataclass(frozen=True)
class Fact:
    """One checked fact: its name, whether it holds, and the measured figure in words."""

    name: str
    passed: bool
    figure: str


@dataclass(frozen=True)
class CheckReport:
    """Every fact checked for one model, the kind it declares, and whether its foreground came out farther in an otherwise sound map."""

    output_kind: str
    facts: tuple[Fact, ...]
    inverted: bool

    @property
    def passed(self) -> bool:
        """Whether every fact holds."""
        return all(fact.passed for fact in self.facts)

    @property
    def verdict(self) -> str:
        """One sentence summing the facts up."""
        failed = [fact.name for fact in self.facts if not fact.passed]
        if not failed:
            return f"behaves as a {self.output_kind} model on the sample photo ({len(self.facts)} of {len(self.facts)} facts hold)"
        verdict = f"{len(failed)} of {len(self.facts)} facts fail ({', '.join(failed)})"
        if self.inverted:
            verdict += f": the declared output kind ({self.output_kind}) is probably inverted"
        return verdict


def other_kind(kind: str) -> str:
    """`disparity` for `depth` and the other way round."""
    return "disparity" if kind == "depth" else "depth"


def read_sample(sample: Sample = SAMPLE) -> SampleImage:
    """The sample's photo and its regions; a missing or mismatched file is a usage error naming it."""
    for path in (sample.photo, sample.mask):
        if not path.is_file():
            raise UsageError(f"sample file not found: {path} (reinstall anydepth-cli and matplotlib)")
    try:
        image = read_image(sample.photo, None)
        with Image.open(sample.mask) as mask_file:
            mask = np.asarray(mask_file.convert("L"))
    except (AnyDepthError, OSError) as exc:
        raise UsageError(f"cannot read the sample {sample.photo.name}: {exc}") from None
    if mask.shape != image.shape[:2]:
        raise UsageError(f"mask {sample.mask.name} is {mask.shape[1]}×{mask.shape[0]}, "
                         f"photo {sample.photo.name} is {image.shape[1]}×{image.shape[0]}")
    return SampleImage(image, mask == FOREGROUND_LEVEL, mask == BACKGROUND_LEVEL)


def check_model(predictor: MapPredictor, activation: str, sample: Sample = SAMPLE) -> CheckReport:
    """Run `predictor` on the sample and its mirror image and check every fact against its declared kind and `activation`."""
    data = read_sample(sample)
    plain, mirrored = predictor.predict_batch([data.image, np.ascontiguousarray(data.image[:, ::-1])])
    plain = np.asarray(plain, dtype=np.float64)
    mirrored = np.asarray(mirrored, dtype=np.float64)[:, ::-1]
    finite = np.isfinite(plain)
    values = plain[finite]
    if not values.size:
        unmeasured = (Fact(name, False, "no finite values") for name in FACT_NAMES[1:])
        return CheckReport(predictor.output_kind, (_finite_fact(finite), *unmeasured), inverted=False)
    nearer, farther = _foreground_fact(plain, finite, data, space_of(predictor.output_kind))
    sound = (_finite_fact(finite), _spread_fact(values), _flip_fact(plain, mirrored))
    facts = (*sound[:2], _range_fact(values, activation), nearer, sound[2])
    return CheckReport(predictor.output_kind, facts, inverted=farther and all(fact.passed for fact in sound))


def _finite_fact(finite: np.ndarray) -> Fact:
    bad = int(finite.size - finite.sum())
    if bad:
        return Fact("finite", False, f"{bad:,} of {finite.size:,} values are NaN or infinite")
    return Fact("finite", True, f"all {finite.size:,} values are finite")


def _spread_fact(values: np.ndarray) -> Fact:
    low, high = np.percentile(values, [1, 99])
    scale = max(abs(low), abs(high))
    if high - low <= CONSTANT_SPREAD * scale or scale == 0:
        return Fact("not constant", False, f"1–99 % of the values lie within {low:.4g} … {high:.4g}: the map is flat")
    return Fact("not constant", True, f"values span {low:.4g} … {high:.4g} (1st–99th percentile)")


def _range_fact(values: np.ndarray, activation: str) -> Fact:
    floor = ACTIVATIONS[activation]
    lowest = float(values.min())
    relation = "≥" if lowest >= floor - FLOOR_TOLERANCE else "<"
    return Fact("activation range", relation == "≥", f"minimum {lowest:.4g} {relation} {floor:g}, the floor of {activation}")


def _foreground_fact(plain: np.ndarray, finite: np.ndarray, data: SampleImage, kind: str) -> tuple[Fact, bool]:
    """The foreground fact and whether the foreground came out clearly farther."""
    foreground, background = plain[data.foreground & finite], plain[data.background & finite]
    if not foreground.size or not background.size:
        return Fact("foreground nearer", False, "no finite values in the foreground or the background"), False
    low, high = np.percentile(plain[finite], [2, 98])
    front, back = float(np.median(foreground)), float(np.median(background))
    nearness = (back - front) if kind == "depth" else (front - back)
    margin = float(nearness / (high - low)) if high > low else 0.0
    rule = "smaller is nearer" if kind == "depth" else "larger is nearer"
    figure = (f"median {front:.4g} on the person, {back:.4g} on the backdrop ({kind}: {rule}); "
              f"person nearer by {margin:+.2f} of the 2–98 % range (needs ≥ {MIN_MARGIN:.2f})")
    return Fact("foreground nearer", margin >= MIN_MARGIN, figure), margin <= -MIN_MARGIN


def _flip_fact(plain: np.ndarray, mirrored: np.ndarray) -> Fact:
    both = np.isfinite(plain) & np.isfinite(mirrored)
    a, b = plain[both], mirrored[both]
    if a.size < 2 or a.std() == 0 or b.std() == 0:
        return Fact("flip consistent", False, "correlation undefined: a map is constant or has no finite values")
    correlation = float(np.corrcoef(a, b)[0, 1])
    return Fact("flip consistent", correlation >= MIN_FLIP_CORRELATION,
                f"Pearson correlation {correlation:.3f} with the mirrored photo's map flipped back "
                f"(needs ≥ {MIN_FLIP_CORRELATION:.2f})")


def override_hint(config: NetworkConfig, arch: Path | None, weights: str) -> str:
    """How to declare the other output kind for `weights` built as `config` (read from `arch` when given)."""
    kind = other_kind(config.output)
    setting = f'"output": "{kind}"'
    if arch is not None:
        return f"if the model outputs {kind}, add {setting} to {arch} and run again with the same options"
    return (f"if the model outputs {kind}, save this as arch.json: {json.dumps({**config.to_dict(), 'output': kind})} "
            f"and run with --checkpoint {weights} --arch arch.json")
