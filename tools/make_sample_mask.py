"""Write anydepth_cli/evaluation/samples/grace_hopper_foreground.png, the coarse hand-drawn person mask `anydepth doctor --check` uses.

    python tools/make_sample_mask.py

White is the person (head, cap, shoulders, torso), black is clearly backdrop (flag and wall),
grey is the band along the outline that the check ignores. The outline is a polygon traced by
hand over assets/grace_hopper.jpg (512 × 600); the band is the polygon's edge grown inwards by
INNER and outwards by OUTER pixels.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter

ASSETS = Path(__file__).resolve().parents[1] / "assets"
MASK = Path(__file__).resolve().parents[1] / "anydepth_cli" / "evaluation" / "samples" / "grace_hopper_foreground.png"
PERSON = [
    (255, 22), (300, 28), (340, 50), (355, 85), (368, 130), (372, 175), (362, 220), (350, 260),
    (335, 300), (340, 330), (400, 350), (460, 380), (500, 410), (511, 440), (511, 599), (15, 599),
    (15, 480), (30, 420), (70, 380), (120, 355), (180, 330), (195, 300), (175, 260), (160, 220),
    (150, 180), (150, 130), (160, 90), (180, 50), (215, 30),
]
"""The person's outline, (x, y) in photo pixels, clockwise from the top of the cap."""
INNER, OUTER = 8, 20
FOREGROUND, IGNORED, BACKGROUND = 255, 128, 0


def person_mask(size: tuple[int, int]) -> Image.Image:
    """The three-level mask (foreground, ignored band, background) for a photo of `size`."""
    inside = Image.new("L", size, 0)
    ImageDraw.Draw(inside).polygon(PERSON, fill=255)
    core = inside.filter(ImageFilter.MinFilter(2 * INNER + 1))
    backdrop = ImageChops.invert(inside).filter(ImageFilter.MinFilter(2 * OUTER + 1))
    mask = Image.new("L", size, IGNORED)
    mask.paste(FOREGROUND, mask=core)
    mask.paste(BACKGROUND, mask=backdrop)
    return mask


def main() -> None:
    photo = Image.open(ASSETS / "grace_hopper.jpg")
    person_mask(photo.size).save(MASK, optimize=True)


if __name__ == "__main__":
    main()
