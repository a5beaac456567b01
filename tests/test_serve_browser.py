"""The web page of `anydepth serve` in headless Chromium (Debian's `chromium` package, driven by Playwright): it loads
with no request leaving the server, takes a photo, shows its depth and its 3D point cloud, and logs no error."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed: "
                               "pip install playwright")
CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    pytest.skip("the browser test needs Debian's chromium package: apt-get install -y chromium",
                allow_module_level=True)

from fixtures_dir import REPO  # noqa: E402
from serving import MODEL_ARGS, Server, cli  # noqa: E402

pytestmark = pytest.mark.slow  # every test runs a server subprocess

# WebGL without a GPU: SwiftShader, Chromium's software renderer.
CHROMIUM_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--no-sandbox"]


def not_blank(png: bytes) -> bool:
    """Whether a screenshot shows something: many distinct colours, not one flat fill."""
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).reshape(-1, 3)
    return len(np.unique(pixels, axis=0)) > 50 and pixels.std() > 10


def test_the_page_shows_depth_and_the_point_cloud_of_a_chosen_photo(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    with Image.open(REPO / "assets" / "grace_hopper.jpg") as image:
        image.resize((60, 70)).save(photo)
    run = tmp_path / "run"
    subprocess.run(cli("predict", str(photo), "-o", str(run), "--raw", "npy", "--pointcloud", *MODEL_ARGS), check=True,
                   capture_output=True, cwd=REPO)
    with Server("--gallery", str(run)) as server, sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            requested, problems = [], []
            page.on("request", lambda request: requested.append(request.url))
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(server.url + "/")
            page.wait_for_function("document.getElementById('model').textContent.length > 0")
            page.set_input_files("#file", str(photo))
            page.wait_for_function("document.getElementById('status').textContent.includes('from')", timeout=30000)
            page.wait_for_function("document.querySelector('#view canvas') !== null")
            page.wait_for_timeout(500)  # a few animation frames of the 3D view
            page.mouse.move(*center_of(page.locator("#compare").bounding_box()))
            readout = page.locator("#readout").text_content()
            page.locator("#slider").fill("0")  # the depth over the whole panel
            depth_shot = page.locator("#depth").screenshot()
            view_shot = page.locator("#view").screenshot()
            page.get_by_role("button", name="photo", exact=True).click()  # the gallery's entry of the same photo
            page.wait_for_function("document.getElementById('status').textContent === 'photo'")
            page.mouse.move(*center_of(page.locator("#compare").bounding_box()))
            gallery_readout = page.locator("#readout").text_content()
            page.goto(server.url + "/docs")
            page.get_by_text("/v1/pointcloud", exact=True).wait_for()  # Swagger UI, from this server too
            (tmp_path / "depth.png").write_bytes(depth_shot)
            (tmp_path / "view.png").write_bytes(view_shot)
        finally:
            browser.close()
    assert not problems, problems
    assert requested and all(url.startswith(server.url) or url.startswith("blob:") for url in requested), requested
    assert readout.startswith("depth ") and " at (" in readout, readout
    assert gallery_readout == readout  # the gallery's npy holds the map the page was served
    assert not_blank(depth_shot), "the depth panel is blank"
    assert not_blank(view_shot), "the 3D view is blank"


def center_of(box: dict) -> tuple[float, float]:
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
