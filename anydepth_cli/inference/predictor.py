"""The predictor: RGB images in, disparity maps at each image's own size out."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class DisparityPredictor(Protocol):
    """What tiling, video, evaluation and point clouds need from a depth network.

    `predict_batch` takes RGB images (H×W×3, uint8, or float32 in [0, 1]) and returns one
    float32 H×W affine-invariant disparity map per image (large = near) at that image's own
    size. Images of equal size are run through the network together.
    """

    input_size: int

    def predict_batch(self, images: Sequence[np.ndarray]) -> list[np.ndarray]: ...
