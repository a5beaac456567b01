"""Temporal stabilisation of per-frame maps (depth or disparity, as the model declares), and one colour
range for a whole clip.

A depth network predicts each frame's map up to its own unknown scale and shift, so a
clip rendered frame by frame flickers. `FrameStabilizer` brings every frame into the frame
of the first one: it fits `scale * frame + shift` to a running reference by a robust
scale-and-shift fit on a grid of sampled pixels (pixels of moving objects disagree with the
reference and are rejected as outliers); applying the fit to the whole frame is left to the
caller, so that it can happen off the thread that feeds the network.

The reference is an exponential moving average of the aligned frames, on the sample grid:
after each frame, `reference = MOMENTUM * reference + (1 - MOMENTUM) * aligned`. It thus
follows slow changes (camera motion, objects that come to rest) within a few frames while
one frame's errors barely move it, and, being built from aligned frames, it keeps the first
frame's scale and shift. A frame the reference cannot explain (a scene cut) is instead matched
by its median and 10th-to-90th-percentile spread, and the reference restarts from it: that is a
fit with a non-positive scale, one keeping fewer than `MIN_INLIER_FRACTION` of the samples, or
one whose aligned inliers explain less than `MIN_EXPLAINED` of the reference's variance there.

`ClipColourRange` gives the colour-map range: the 1st and 99th percentiles of the aligned
frames seen so far, a range that only widens, so that once it has settled a colour means the
same value for the rest of the clip (with stable frames it settles on the first frame).
"""

from __future__ import annotations

import math

import numpy as np

from anydepth_cli.inference.align import Affine, robust_fit_scale_shift

SAMPLES_PER_AXIS = 64
"""Sample grid of the fit and the colour range: about this many pixels along each axis."""

MOMENTUM = 0.8
"""Weight of the previous reference when the newest aligned frame is blended in."""

MIN_INLIER_FRACTION = 0.3
"""A fit keeping fewer samples than this means the frame no longer matches the reference."""

MIN_EXPLAINED = 0.5
"""Least fraction of the reference's variance (over the inliers) a fit must explain."""

RANGE_PERCENTILES = (1.0, 99.0)
"""Percentiles of the aligned maps that bound the clip's colour range."""


def sample_grid(shape: tuple[int, ...], per_axis: int = SAMPLES_PER_AXIS) -> tuple[slice, slice]:
    """Strided slices picking about `per_axis` rows and columns of an H×W map."""
    return tuple(slice(None, None, max(1, math.ceil(n / per_axis))) for n in shape[:2])  # type: ignore[return-value]


def _spread_match(sample: np.ndarray, reference: np.ndarray) -> Affine:
    """Scale and shift giving `sample` the median and 10–90th percentile spread of `reference`."""
    s_low, s_mid, s_high = np.nanpercentile(sample, [10.0, 50.0, 90.0])
    r_low, r_mid, r_high = np.nanpercentile(reference, [10.0, 50.0, 90.0])
    scale = (r_high - r_low) / (s_high - s_low) if s_high > s_low and r_high > r_low else 1.0
    return Affine(float(scale), float(r_mid - scale * s_mid))


def _explained(aligned: np.ndarray, reference: np.ndarray, inlier: np.ndarray) -> float:
    """Fraction of the reference's variance over `inlier` that `aligned` explains (R²)."""
    spread = float(np.var(reference[inlier])) if inlier.any() else 0.0
    if spread <= 0:
        return 1.0
    return 1.0 - float(np.mean((aligned[inlier] - reference[inlier]) ** 2)) / spread


class FrameStabilizer:
    """Aligns each frame's map, in the model's own space and in clip order, to a running reference (see the module docstring).

    `fit` takes each frame's float H×W map and returns the scale and shift that align it
    (`fit(d).apply(d)` is the aligned map). The first frame (and a frame of a new size) keeps
    its values and starts the reference. `last_reset` says whether the latest frame restarted it.
    """

    def __init__(self, samples_per_axis: int = SAMPLES_PER_AXIS, momentum: float = MOMENTUM,
                 min_inlier_fraction: float = MIN_INLIER_FRACTION, min_explained: float = MIN_EXPLAINED) -> None:
        self.samples_per_axis = samples_per_axis
        self.momentum = momentum
        self.min_inlier_fraction = min_inlier_fraction
        self.min_explained = min_explained
        self.last_reset = True
        self._reference: np.ndarray | None = None

    def fit(self, frame: np.ndarray) -> Affine:
        """The scale and shift bringing this frame onto the reference; updates the reference."""
        values = np.asarray(frame)
        sample = values[sample_grid(values.shape, self.samples_per_axis)].astype(np.float64)
        reference = self._reference
        if reference is None or reference.shape != sample.shape:
            fit, reset = Affine(1.0, 0.0), True
        else:
            fit, inlier = robust_fit_scale_shift(sample, reference)
            reset = (fit.scale <= 0 or inlier.mean() < self.min_inlier_fraction
                     or _explained(fit.scale * sample + fit.shift, reference, inlier) < self.min_explained)
            if reset:
                fit = _spread_match(sample, reference)
        aligned = fit.scale * sample + fit.shift
        if reset:
            self._reference = aligned
        else:
            blend = self.momentum * reference + (1.0 - self.momentum) * aligned
            self._reference = np.where(np.isfinite(blend), blend, np.where(np.isfinite(aligned), aligned, reference))
        self.last_reset = reset
        return fit


class ClipColourRange:
    """The colour range of a clip: percentiles of the frames seen so far, only ever widening."""

    def __init__(self, percentiles: tuple[float, float] = RANGE_PERCENTILES,
                 samples_per_axis: int = SAMPLES_PER_AXIS) -> None:
        self.percentiles = percentiles
        self.samples_per_axis = samples_per_axis
        self.low = math.inf
        self.high = -math.inf

    def update(self, frame: np.ndarray, fit: Affine | None = None) -> tuple[float, float] | None:
        """Widen the range to cover the percentiles of this frame (brought by `fit`, if given,
        onto the clip's reference); returns the range (low < high), or None while every frame
        so far has been constant (or non-finite)."""
        values = np.asarray(frame)
        sample = values[sample_grid(values.shape, self.samples_per_axis)]
        if fit is not None:
            sample = fit.apply(sample)
        sample = sample[np.isfinite(sample)]
        if sample.size:
            low, high = np.percentile(sample, self.percentiles)
            self.low, self.high = min(self.low, float(low)), max(self.high, float(high))
        return (self.low, self.high) if self.low < self.high else None
