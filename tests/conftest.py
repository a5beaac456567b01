"""Shared test helpers: running the real CLI in a subprocess, fixture networks, sample images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixtures_dir import fixtures_dir

TINY = "tiny_dav2_sdt"


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(OMP_NUM_THREADS="2", COLUMNS="120", **extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m anydepth_cli ARGS` as a user would run it; returns the finished process."""
    return subprocess.run([sys.executable, "-m", "anydepth_cli", *map(str, args)], capture_output=True, text=True,
                          env=env or cli_env(), cwd=cwd, timeout=timeout)


def tiny_model_args(name: str = TINY) -> list[str]:
    """CLI options that run a shared fixture network from local files."""
    folder = fixtures_dir()
    return ["--checkpoint", str(folder / f"{name}.pth"), "--arch", str(folder / f"{name}.json")]


def save_photo(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A smooth random colour image (a stand-in photo) saved at `path`."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
    image = Image.fromarray(small).resize((width, height), Image.BILINEAR)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture(scope="session")
def sample_photo() -> Path:
    """The public-domain photo of Grace Hopper that ships with matplotlib."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
