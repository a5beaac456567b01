"""`anydepth serve` against a real uvicorn subprocess with the tiny fixture network: answers equal to `predict`'s
files, dynamic batching, every fault answered with its status while the server keeps serving, the bounded queue,
the SIGTERM drain, tokens, the gallery and `predict --server`."""

from __future__ import annotations

import io
import os
import socket
import struct
import subprocess
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="the serve extra is not installed: pip install -e '.[serve]'")
httpx = pytest.importorskip("httpx", reason="httpx (the test extra) is not installed")

from fixtures_dir import REPO  # noqa: E402
from serving import MODEL_ARGS, Server, cli, free_port, metric  # noqa: E402

pytestmark = pytest.mark.slow  # every test runs a server subprocess
PHOTO = REPO / "assets" / "grace_hopper.jpg"


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Photos cut from the sample photo: `tiled` (run by 2 × 2 tiles at --input-size 32, as a JPEG) and two small
    ones (one whole pass)."""
    folder = tmp_path_factory.mktemp("photos")
    with Image.open(PHOTO) as image:
        image.resize((90, 105)).save(folder / "tiled.jpg", quality=90)
        for index, (box, size) in enumerate([((100, 80, 400, 340), (60, 52)), ((0, 0, 512, 600), (40, 47))]):
            image.crop(box).resize(size).save(folder / f"small{index}.png")
    return {path.stem: path for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def server():
    with Server("--max-batch", "4", "--max-wait-ms", "100", "--max-body-mb", "1") as running:
        yield running


def predict_files(photo: Path, out: Path, *options: str) -> Path:
    subprocess.run(cli("predict", str(photo), "-o", str(out), *MODEL_ARGS, *options), check=True, cwd=REPO,
                   capture_output=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    return out


@pytest.mark.parametrize("name", ["tiled", "small0"])
def test_served_files_equal_predicts_byte_for_byte(server: Server, photos: dict[str, Path], tmp_path: Path,
                                                   name: str) -> None:
    photo = photos[name]
    with_npy = predict_files(photo, tmp_path / "npy", "--raw", "npy", "--pointcloud")
    with_png16 = predict_files(photo, tmp_path / "png16", "--raw", "png16")
    answers = {}
    for fmt in ("npy", "png16", "color"):
        answers[fmt] = server.client.post("/v1/depth", params={"format": fmt}, content=photo.read_bytes())
    answers["ply"] = server.client.post("/v1/pointcloud", files={"image": (photo.name, photo.read_bytes())})
    assert {fmt: answer.status_code for fmt, answer in answers.items()} == dict.fromkeys(answers, 200)
    assert answers["npy"].content == (with_npy / f"{name}_depth.npy").read_bytes()
    assert answers["png16"].content == (with_png16 / f"{name}_depth16.png").read_bytes()
    assert answers["color"].content == (with_npy / f"{name}_depth.png").read_bytes()
    assert answers["ply"].content == (with_npy / f"{name}.ply").read_bytes()
    values = np.load(io.BytesIO(answers["npy"].content))
    assert values.std() > 0.01 * abs(values.mean())  # a real map, not a constant
    headers = answers["npy"].headers
    assert headers["x-depth-kind"] == "depth" and headers["x-model"] == f"{Path(MODEL_ARGS[1]).name}"
    assert float(headers["x-depth-min"]) == values.min() and float(headers["x-depth-max"]) == values.max()


def test_json_and_exr_describe_the_same_map(server: Server, photos: dict[str, Path]) -> None:
    import OpenEXR

    body = photos["small0"].read_bytes()
    summary = server.client.post("/v1/depth?format=json", content=body).json()
    values = np.load(io.BytesIO(server.client.post("/v1/depth", content=body).content))
    assert summary["kind"] == "depth" and (summary["height"], summary["width"]) == values.shape
    assert (summary["min"], summary["max"]) == (float(values.min()), float(values.max()))
    exr = server.client.post("/v1/depth?format=exr", content=body)
    assert exr.status_code == 200
    with OpenEXR.File(io.BytesIO(exr.content)) as image:
        np.testing.assert_array_equal(image.channels()["Y"].pixels, values)


def test_concurrent_requests_form_batches(server: Server, photos: dict[str, Path]) -> None:
    before = server.client.get("/metrics").text
    bodies = [photos[f"small{i % 2}"].read_bytes() for i in range(16)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda body: server.client.post("/v1/depth", content=body), bodies))
    assert [answer.status_code for answer in answers] == [200] * 16
    for body, answer in zip(bodies, answers):  # each answer is its own photo's map (batches may round differently)
        own, first = (np.load(io.BytesIO(a.content)) for a in (answer, answers[bodies.index(body)]))
        assert own.shape == first.shape and np.abs(own - first).max() <= 1e-5 * np.ptp(first)
    after = server.client.get("/metrics").text
    batches = metric(after, "anydepth_batch_size_count") - metric(before, "anydepth_batch_size_count")
    singles = metric(after, "anydepth_batch_size_bucket", le="1.0") - metric(before, "anydepth_batch_size_bucket",
                                                                             le="1.0")
    assert batches < 16 and singles < batches, after
    assert metric(after, "anydepth_requests_total", endpoint="/v1/depth", status="200") >= 16


def huge_png_header(width: int, height: int) -> bytes:
    """The start of a PNG of width × height pixels: a header that passes, no pixel data (never decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)) + \
        chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def raw_request(port: int, request: bytes, read: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        if not read:
            return b""
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


def test_every_fault_gets_its_status_and_the_server_keeps_serving(server: Server, photos: dict[str, Path]) -> None:
    good = photos["small0"].read_bytes()
    post = server.client.post
    faults = {
        "not an image": (post("/v1/depth", content=b"hello, world" * 10), 415),
        "truncated": (post("/v1/depth", content=PHOTO.read_bytes()[:3000]), 415),
        "empty": (post("/v1/depth", content=b""), 415),
        "over the body cap": (post("/v1/depth", content=b"\0" * (1024 * 1024 + 1)), 413),
        "900 megapixels": (post("/v1/depth", content=huge_png_header(30000, 30000)), 413),
        "bad format": (post("/v1/depth?format=tiff", content=good), 422),
        "bad focal": (post("/v1/pointcloud?focal=-3", content=good), 422),
        "bad cmap": (post("/v1/depth?format=color&cmap=nope", content=good), 422),
        "multipart without image": (post("/v1/depth", files={"photo": ("a.png", good)}), 422),
        "no such page": (server.client.get("/v2/nothing"), 404),
    }
    for name, (answer, status) in faults.items():
        assert answer.status_code == status, (name, answer.text)
        assert answer.text.count("\n") == 0 and set(answer.json()) == {"error"}, (name, answer.text)
    assert "--max-pixels" in faults["900 megapixels"][0].json()["error"]
    lying = raw_request(server.port, b"POST /v1/depth HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\nabc")
    assert lying.startswith(b"HTTP/1.1 413")
    # hang up in the middle of an upload
    raw_request(server.port, b"POST /v1/depth HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n\r\n" + good[:100],
                read=False)
    assert post("/v1/depth", content=good).status_code == 200
    text = server.client.get("/metrics").text
    assert metric(text, "anydepth_requests_total", endpoint="/v1/depth", status="500") == 0


def test_a_full_queue_answers_503_with_retry_after_and_late_answers_504(photos: dict[str, Path]) -> None:
    body = photos["tiled"].read_bytes()  # five network passes: long enough to keep the queue full
    with Server("--max-batch", "1", "--queue", "1", "--max-wait-ms", "0") as server:
        with ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda _: server.client.post("/v1/depth", content=body), range(12)))
        statuses = sorted(answer.status_code for answer in answers)
        assert set(statuses) == {200, 503} and statuses.count(200) >= 1, statuses
        refused = next(answer for answer in answers if answer.status_code == 503)
        assert refused.headers["retry-after"] == "1" and refused.json() == {"error": "the queue is full"}
    with Server("--timeout", "0.001") as server:
        late = server.client.post("/v1/depth", content=body)
        assert late.status_code == 504 and "no answer within" in late.json()["error"]
        assert server.client.get("/readyz").status_code == 200


def test_sigterm_answers_every_accepted_request_then_exits_0(photos: dict[str, Path]) -> None:
    body = photos["tiled"].read_bytes()
    server = Server("--max-batch", "1").wait_ready()
    results: list[object] = []

    def ask() -> None:
        try:
            results.append(httpx.post(f"{server.url}/v1/depth", content=body, timeout=60).status_code)
        except httpx.TransportError as exc:  # not accepted: the server had stopped listening
            results.append(type(exc).__name__)

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while (queued := metric(httpx.get(f"{server.url}/metrics").text, "anydepth_queue_depth")) < 3:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert server.stop() == 0, server.output
    for thread in threads:
        thread.join()
    # Every request in the queue is answered; a connection whose request the server had not read yet when it stopped
    # may be closed unanswered (ReadError), as HTTP allows for a request not begun.
    assert results.count(200) >= queued and set(results) <= {200, "ConnectError", "ReadError"}, results
    assert "Traceback" not in server.output


def test_token_rules(photos: dict[str, Path]) -> None:
    secret = "s3cret-token-for-the-test"
    body = photos["small0"].read_bytes()
    with Server(token=secret, env={"ANYDEPTH_TOKEN": secret}) as server:
        url = server.url
        assert httpx.post(f"{url}/v1/depth", content=body).status_code == 401
        wrong = httpx.post(f"{url}/v1/depth", content=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert wrong.json() == {"error": "missing or wrong bearer token"}
        assert httpx.get(f"{url}/metrics").status_code == 401
        assert httpx.get(f"{url}/healthz").status_code == 200 and httpx.get(f"{url}/readyz").status_code == 200
        with httpx.Client(base_url=url) as anyone:
            statuses = {anyone.post("/v1/depth", content=body, headers={"Authorization": f"Bearer wrong{i}"}).status_code
                        for i in range(100)}
        assert statuses == {401}
        assert server.client.post("/v1/depth", content=body).status_code == 200
    assert secret not in server.output
    refused = subprocess.run(cli("serve", *MODEL_ARGS, "--host", "0.0.0.0", "--port", "9"), capture_output=True,
                             text=True, env={**os.environ, "ANYDEPTH_TOKEN": ""}, cwd=REPO)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--token" in refused.stderr


def test_gallery_serves_a_predict_run_and_nothing_outside_it(photos: dict[str, Path], tmp_path: Path) -> None:
    run = predict_files(photos["small0"], tmp_path / "run", "--raw", "npy", "--pointcloud")
    (tmp_path / "secret.txt").write_text("private")
    os.symlink(tmp_path / "secret.txt", run / "leak_depth.png")
    os.symlink(tmp_path, run / "outside")
    with Server("--gallery", str(run)) as server:
        entries = server.client.get("/v1/gallery").json()["entries"]
        assert entries == [{"name": "small0", "files": {"color": "small0_depth.png", "raw:npy": "small0_depth.npy",
                                                         "camera": "small0_camera.json", "cloud": "small0.ply"}}]
        served = server.client.get("/gallery/small0_depth.npy")
        assert served.status_code == 200 and served.content == (run / "small0_depth.npy").read_bytes()
        escapes = ["/gallery/../secret.txt", "/gallery/%2e%2e/secret.txt", "/gallery/..%2Fsecret.txt",
                   "/gallery/%2Fetc%2Fpasswd", "/gallery//etc/passwd", "/gallery/leak_depth.png",
                   "/gallery/outside/secret.txt", "/gallery/.%2E/.%2e/etc/passwd", "/gallery/..\\secret.txt"]
        for path in escapes:
            answer = raw_request(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            assert answer.split(b"\r\n")[0] in (b"HTTP/1.1 404 Not Found", b"HTTP/1.1 400 Bad Request"), path
            assert b"private" not in answer and b"root:" not in answer, path


def test_page_and_its_assets_come_from_the_server(server: Server) -> None:
    page = server.client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "http://" not in page.text and "https://" not in page.text
    for asset in ("/static/app.js", "/static/vendor/three/three.module.js", "/static/vendor/three/LICENSE"):
        assert server.client.get(asset).status_code == 200, asset
    docs = server.client.get("/docs").text
    assert "/static/vendor/swagger-ui/swagger-ui-bundle.js" in docs and "cdn" not in docs
    assert server.client.get("/openapi.json").json()["paths"].keys() >= {"/v1/depth", "/v1/pointcloud"}
    assert "access-control-allow-origin" not in server.client.get("/healthz",
                                                                  headers={"Origin": "http://elsewhere"}).headers


def test_predict_with_server_writes_the_files_of_a_local_run(server: Server, photos: dict[str, Path],
                                                             tmp_path: Path) -> None:
    folder = photos["tiled"].parent
    # one image (or tile) a request, so that the server runs the batches a local run does: other batch sizes may
    # round differently in the last bit
    options = ["--raw", "npy", "--pointcloud", "--side-by-side", "--batch-size", "1"]
    local = predict_files(folder, tmp_path / "local", *options)
    remote = tmp_path / "remote"
    run = subprocess.run(cli("predict", str(folder), "-o", str(remote), "--server", server.url, *options),
                         cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert run.returncode == 0, run.stderr
    written = sorted(path.relative_to(local) for path in local.rglob("*") if path.is_file())
    assert written == sorted(path.relative_to(remote) for path in remote.rglob("*") if path.is_file())
    assert len(written) == 5 * len(photos)  # picture, npy, side by side, cloud, camera record
    for relative in written:
        assert (local / relative).read_bytes() == (remote / relative).read_bytes(), relative
    mixed = subprocess.run(cli("predict", str(folder), "-o", str(remote), "--server", server.url, *MODEL_ARGS),
                           cwd=REPO, capture_output=True, text=True)
    assert mixed.returncode == 2 and "drop --checkpoint, --arch, --input-size" in mixed.stderr


def test_a_model_that_fails_to_load_stops_the_server_with_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    args = ["--checkpoint", str(broken), *MODEL_ARGS[2:]]
    run = subprocess.run(cli("serve", *args, "--port", str(free_port())), capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip().splitlines()[-1].startswith("error:"), run.stderr
