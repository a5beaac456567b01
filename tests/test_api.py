"""The Python API: the README's example runs, and the API gives the CLI's numbers."""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import cli_env, run_cli, save_photo, tiny_model_args
from fixtures_dir import REPO, fixtures_dir

TINY = fixtures_dir() / "tiny_dav2_sdt"


def readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs(tmp_path):
    for name, size in {"photo.jpg": (300, 200), "a.jpg": (120, 90), "b.jpg": (90, 120)}.items():
        save_photo(tmp_path / name, *size)
    code = readme_example().replace('load("anydepth-dav2-vitb")', f'load("{TINY}.pth", arch="{TINY}.json")')
    assert code != readme_example()
    code += "\nassert result.map.shape == (200, 300) and picture.shape == (200, 300, 3) and len(cloud.points) > 0"
    code += "\nassert [r.map.shape for r in results] == [(90, 120), (120, 90)] and tiled.confidence is not None"
    code += "\nassert numpy.load('b.jpg.npy').shape == (120, 90)"
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["depth", "depth", "(200,", "300)"]


def test_api_maps_equal_the_cli_raw_files(tmp_path):
    import anydepth_cli

    photo = save_photo(tmp_path / "in" / "p.png", 160, 120)
    model = anydepth_cli.load(f"{TINY}.pth", arch=f"{TINY}.json", device="cpu")
    from_path = model.predict(photo)
    from_pil = model.predict(Image.open(photo))
    from_array = model.predict(np.asarray(Image.open(photo).convert("RGB")))
    result = run_cli("predict", photo, "-o", tmp_path / "out", "--raw", "npy", "--tile", "off", *tiny_model_args())
    assert result.returncode == 0, result.stderr
    written = np.load(tmp_path / "out" / "p_depth.npy")
    for api in (from_path, from_pil, from_array):
        np.testing.assert_allclose(api.map, written, rtol=1e-5, atol=1e-6)
    assert from_path.kind == model.kind == "depth"
    picture = np.asarray(Image.open(tmp_path / "out" / "p_depth.png"))
    np.testing.assert_array_equal(from_path.colorize(), picture)


@pytest.mark.parametrize("bad", [np.zeros((4, 4)), np.zeros((4, 4, 3), dtype=np.int64)])
def test_bad_arrays_are_usage_errors(bad):
    from anydepth_cli.errors import UsageError
    from anydepth_cli.pipelines.api import as_rgb

    with pytest.raises(UsageError):
        as_rgb(bad)


def test_importing_the_package_does_not_import_torch():
    done = subprocess.run([sys.executable, "-c", "import sys, anydepth_cli; print('torch' in sys.modules)"],
                          capture_output=True, text=True, env=cli_env())
    assert done.stdout.strip() == "False"
