"""`--metric-from MODEL`: a relative model's maps brought into metres by a metric model run on the same photos."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from anydepth_cli.errors import UsageError
from anydepth_cli.pipelines.anchor import AnchorFit, fit_anchor
from anydepth_cli.inference.predictor import BatchedPredictor


KEPT_FITS = 256
"""How many recent maps' fits are kept for `fit_of`."""


class AnchoredPredictor:
    """A predictor whose maps are the `relative` predictor's, anchored (`pipelines.anchor`) to the `metric`
    predictor's maps of the same images: metric depth in metres. Each map's fit is kept until `fit_of` takes it."""

    output_kind = "metric"

    def __init__(self, relative: BatchedPredictor, metric: BatchedPredictor) -> None:
        if metric.output_kind != "metric":
            raise UsageError("--metric-from needs a metric model (dav2-metric-*), one that answers in metres")
        if relative.output_kind == "metric":
            raise UsageError("the model already answers in metres: --metric-from anchors relative models")
        self.relative, self.metric = relative, metric
        self.input_size, self.batch_size, self.device = relative.input_size, relative.batch_size, relative.device
        self.max_depth = metric.max_depth
        self._fits: dict[int, tuple[np.ndarray, AnchorFit]] = {}

    def predict_batch(self, images: Sequence[np.ndarray],
                      sizes: Sequence[tuple[int, int]] | None = None) -> list[np.ndarray]:
        """Each image's relative map in metres, at its own size (or at `sizes`)."""
        maps = []
        for relative, metric in zip(self.relative.predict_batch(images, sizes),
                                    self.metric.predict_batch(images, sizes)):
            fit = fit_anchor(relative, self.relative.output_kind, metric, self.max_depth)
            anchored = fit.apply(relative)
            self._fits[id(anchored)] = (anchored, fit)
            maps.append(anchored)
        while len(self._fits) > KEPT_FITS:  # maps nobody asks about (tiles) are not kept
            self._fits.pop(next(iter(self._fits)))
        return maps

    def fit_of(self, values: np.ndarray) -> AnchorFit | None:
        """The fit that made `values` (a map this predictor returned), forgotten once taken; None for other maps
        (tiled photos are anchored tile by tile)."""
        kept = self._fits.pop(id(values), None)
        return kept[1] if kept is not None and kept[0] is values else None
