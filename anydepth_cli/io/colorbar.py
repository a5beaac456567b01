"""A colour bar beside a depth picture: metres for metric maps, near and far for affine-invariant ones."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from anydepth_cli.io.writers import colorize, near_is_dark, normalisation_range

BAR_WIDTH = 16
LABEL_WIDTH = 64
MARGIN = 6
TICKS = 5


def picture_with_colorbar(values: np.ndarray, kind: str, cmap: str, invert: bool = False) -> np.ndarray:
    """The depth picture of a map of `kind` (near bright, far bright with `invert`) with a colour bar on its right:
    ticks in metres for `metric` maps, its ends marked near and far for the others. RGB uint8, H×(W + bar)×3."""
    values = np.asarray(values, dtype=np.float32)
    low, high = normalisation_range(values[np.isfinite(values)])
    dark_near = near_is_dark(kind, invert)
    picture = colorize(values, cmap, dark_near, (low, high) if high > low else None)
    height = picture.shape[0]
    ramp = np.linspace(high, low, height, dtype=np.float32)[:, None].repeat(BAR_WIDTH, axis=1)  # top = large
    bar = colorize(ramp, cmap, dark_near, (low, high) if high > low else None)
    panel = np.full((height, MARGIN + BAR_WIDTH + LABEL_WIDTH, 3), 255, dtype=np.uint8)
    panel[:, MARGIN:MARGIN + BAR_WIDTH] = bar
    image = Image.fromarray(panel)
    _label(ImageDraw.Draw(image), height, low, high, kind)
    return np.concatenate([picture, np.asarray(image)], axis=1)


def _label(draw: ImageDraw.ImageDraw, height: int, low: float, high: float, kind: str) -> None:
    """Tick labels down the bar (the top row shows `high`)."""
    font = ImageFont.load_default()
    left = MARGIN + BAR_WIDTH + 3
    if kind != "metric":
        top, bottom = ("near", "far") if kind == "disparity" else ("far", "near")
        draw.text((left, 0), top, fill=(0, 0, 0), font=font)
        draw.text((left, max(0, height - 12)), bottom, fill=(0, 0, 0), font=font)
        return
    count = max(2, min(TICKS, height // 14))
    for i in range(count):
        row = round(i * (height - 1) / (count - 1))
        value = high - (high - low) * row / max(1, height - 1)
        draw.text((left, min(max(0, row - 6), max(0, height - 12))), f"{value:.3g} m", fill=(0, 0, 0), font=font)
