"""A toy training set for `anydepth train`, runnable with nothing to download.

    python tools/make_toy_dataset.py toy/     # toy/train (32 pairs), toy/val (8), toy/encoder.pth

Images are smooth random colours whose depth is a fixed non-linear function of their colour,
so a head can learn it; `encoder.pth` is the encoder of the shared tiny fixture network
(`tiny_dav2_sdt`), as a plain backbone state dict for `--encoder-weights`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_dataset(folder: Path, count: int, seed: int, size: tuple[int, int] = (64, 80)) -> Path:
    """`count` image/depth pairs (`image/NNN.png`, `depth/NNN.npy`) of `size` (height, width) in `folder`."""
    rng = np.random.default_rng(seed)
    (folder / "image").mkdir(parents=True)
    (folder / "depth").mkdir()
    for i in range(count):
        small = rng.integers(0, 255, (3, 3, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(small).resize((size[1], size[0]), Image.BILINEAR))
        r, g = image[..., 0] / 255.0, image[..., 1] / 255.0
        Image.fromarray(image).save(folder / "image" / f"{i:03d}.png")
        np.save(folder / "depth" / f"{i:03d}.npy", (1 + 4 * r**2 * (1 - 0.5 * g)).astype(np.float32))
    return folder


def save_fixture_encoder(path: Path, fixtures: Path, name: str = "tiny_dav2_sdt") -> Path:
    """The encoder of fixture network `name` as a plain backbone state dict."""
    import json

    from anydepth_cli.weights.checkpoint import LAYOUT_PREFIXES, read_state_dict
    import torch

    prefix = LAYOUT_PREFIXES[json.loads((fixtures / f"{name}.json").read_text())["config"]["layout"]][0]
    state = read_state_dict(fixtures / f"{name}.pth")
    torch.save({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--fixtures", type=Path,
                        default=Path(os.environ.get("ANYDEPTH_FIXTURES_DIR") or REPO.parent / "shared" / "fixtures"))
    args = parser.parse_args()
    make_dataset(args.folder / "train", 32, 0)
    make_dataset(args.folder / "val", 8, 1)
    print(save_fixture_encoder(args.folder / "encoder.pth", args.fixtures))


if __name__ == "__main__":
    main()
