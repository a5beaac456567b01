"""`anydepth serve` under load and faults (issue 34's goals), against a real server on 127.0.0.1.

    python benchmarks/serve_load.py --checkpoint NET.pth --arch NET.json [--input-size 28] [--photos 64]
        [--photo-size 640x480] [--clients 8] [--seconds 20] [--load-clients 32] [--load-seconds 60]

1. Throughput: the same JPEG photos (`--photo-size`, 640×480) through `anydepth predict` (its own photo time, without the model
   load) and through the server with `--clients` concurrent clients; served photos/s as a share of predict's.
2. Latency: `--clients` clients sending small photos for `--seconds`: requests/s and p50/p99.
3. Load: `--load-clients` clients for `--load-seconds`: only 200 and 503 may come back, every 200 must equal a local
   predict of its photo, and the server's RSS at the end must be within 10 % of its RSS after 10 s.
4. Faults: truncated, oversized and non-image bodies, a 900-megapixel PNG, a hang-up in the middle of an upload,
   1,000 requests with a wrong token, gallery paths leaving the folder; then SIGTERM in the middle of a load run
   (every accepted request answered, exit status 0). No 500 may follow any of them.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TOKEN = "benchmark-token"


def make_photos(folder: Path, count: int, size: tuple[int, int]) -> list[Path]:
    """`count` distinct JPEG photos of `size` cut from the sample photo."""
    folder.mkdir(parents=True, exist_ok=True)
    with Image.open(REPO / "assets" / "grace_hopper.jpg") as source:
        source = source.convert("RGB")
        paths = []
        for index in range(count):
            shift = index * 7 % 80
            crop = source.crop((shift, shift, source.width - 80 + shift, source.height - 80 + shift)).resize(size)
            paths.append(folder / f"photo{index:03d}.jpg")
            crop.save(paths[-1], quality=90)
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, model: list[str], *options: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen([sys.executable, "-m", "anydepth_cli", "serve", *model, "--port",
                                         str(self.port), "--token", TOKEN, *options], cwd=REPO,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if request(self.port, "GET", "/readyz", auth=False)[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise SystemExit("the server did not get ready")

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status)[1]) / 1024

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(60)


def request(port: int, method: str, path: str, body: bytes | None = None, auth: bool = True,
            connection: http.client.HTTPConnection | None = None, token: str = TOKEN) -> tuple[int, bytes]:
    own = connection is None
    connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"Authorization": f"Bearer {token}"} if auth else {}
        connection.request(method, path, body, headers)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        if own:
            connection.close()


def clients(port: int, bodies: list[bytes], count: int, seconds: float | None = None, total: int | None = None,
            stop: threading.Event | None = None) -> list[tuple[int, int, float, bytes]]:
    """`count` keep-alive clients sending `bodies` round robin, for `seconds` or `total` requests in all; each answer
    as (photo index, status, seconds, body)."""
    results: list[tuple[int, int, float, bytes]] = []
    lock, counter = threading.Lock(), iter(range(10**9))
    end = time.monotonic() + seconds if seconds else None

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            index = next(counter)
            if (total is not None and index >= total) or (end and time.monotonic() > end) or (stop and stop.is_set()):
                break
            start = time.perf_counter()
            try:
                status, content = request(port, "POST", "/v1/depth?format=npy", bodies[index % len(bodies)],
                                          connection=connection)
            except (OSError, http.client.HTTPException):  # the server is gone (or going): this client stops
                with lock:
                    results.append((index % len(bodies), -1, time.perf_counter() - start, b""))
                break
            with lock:
                results.append((index % len(bodies), status, time.perf_counter() - start, content))
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def compare(content: bytes, reference: list[bytes], index: int) -> str:
    """How a served npy compares with the local predict of its photo: `equal` (byte for byte), `rounding` (within
    1e-5 of the map's range: batches of other sizes sum in another order) or `WRONG`."""
    if content == reference[index]:
        return "equal"
    served, local = (np.load(io.BytesIO(data)) for data in (content, reference[index]))
    close = served.shape == local.shape and np.abs(served - local).max() <= 1e-5 * np.ptp(local)
    return "rounding" if close else "WRONG"


def predict_seconds(model: list[str], folder: Path, out: Path, batch: int) -> float:
    run = subprocess.run([sys.executable, "-m", "anydepth_cli", "predict", str(folder), "-o", str(out), "--raw", "npy",
                          "--batch-size", str(batch), *model], cwd=REPO, capture_output=True, text=True, check=True)
    return float(re.search(r"time\s+([\d.]+) s", run.stderr)[1])


def huge_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def faults(server: Server, photo: bytes, gallery: Path) -> list[str]:
    """Each fault and the status it got."""
    port, lines = server.port, []
    cases = {"truncated JPEG": photo[: len(photo) // 3], "non-image": b"not an image" * 100,
             "900-megapixel PNG": huge_png(30000, 30000), "oversized (65 MB)": b"\0" * (65 * 1024 * 1024)}
    for name, body in cases.items():
        try:
            status = request(port, "POST", "/v1/depth", body)[0]
        except OSError as exc:
            status = f"connection closed ({type(exc).__name__})"
        lines.append(f"{name}: {status}")
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /v1/depth HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + photo[:500])
    lines.append(f"hang-up mid-upload, then a photo: {request(port, 'POST', '/v1/depth', photo)[0]}")
    wrong = Counter(request(port, "POST", "/v1/depth", photo, token=f"wrong{i}")[0] for i in range(1000))
    lines.append(f"1,000 wrong tokens: {dict(wrong)}")
    (gallery.parent / "secret.txt").write_text("secret")
    link = gallery / "escape_depth.png"
    if not link.exists():
        os.symlink(gallery.parent / "secret.txt", link)
    escapes = ["/gallery/../secret.txt", "/gallery/%2e%2e/secret.txt", "/gallery/..%2Fsecret.txt",
               "/gallery//etc/passwd", "/gallery/%2Fetc%2Fpasswd", "/gallery/escape_depth.png"]
    statuses = Counter(request(port, "GET", path)[0] for path in escapes)
    lines.append(f"gallery paths leaving the folder ({len(escapes)}): {dict(statuses)}")
    metrics = request(port, "GET", "/metrics")[1].decode()
    errors = sum(float(line.split()[-1]) for line in metrics.splitlines() if 'status="500"' in line)
    lines.append(f"500s after the faults: {errors:g}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--arch", required=True)
    parser.add_argument("--input-size", default="28")
    parser.add_argument("--photos", type=int, default=64)
    parser.add_argument("--photo-size", default="640x480", help="WIDTHxHEIGHT of the photos of 1. and 3.")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--load-clients", type=int, default=32)
    parser.add_argument("--load-seconds", type=float, default=60)
    parser.add_argument("--max-batch", default="8")
    args = parser.parse_args()
    model = ["--checkpoint", args.checkpoint, "--arch", args.arch, "--input-size", args.input_size]
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    size = tuple(int(side) for side in args.photo_size.split("x"))
    photos = make_photos(work / "photos", args.photos, size)
    bodies = [path.read_bytes() for path in photos]
    local_seconds = predict_seconds(model, work / "photos", work / "local", int(args.max_batch))
    reference = [(work / "local" / f"{path.stem}_depth.npy").read_bytes() for path in photos]
    print(f"CPU: {os.cpu_count()} cores; model {Path(args.checkpoint).name} at --input-size {args.input_size}")

    server = Server(model, "--max-batch", args.max_batch, "--queue", "64", "--gallery", str(work / "local"))
    start = time.perf_counter()
    served = clients(server.port, bodies, args.clients, total=len(bodies))
    served_seconds = time.perf_counter() - start
    assert all(status == 200 for _, status, _, _ in served)
    print(f"1. throughput, {len(bodies)} photos {args.photo_size}: predict {len(bodies) / local_seconds:.1f} photos/s, served "
          f"({args.clients} clients) {len(bodies) / served_seconds:.1f} photos/s = "
          f"{local_seconds / served_seconds * 100:.0f} % of predict")

    small = [io.BytesIO() for _ in range(8)]
    for index, buffer in enumerate(small):
        Image.open(photos[index]).resize((64, 48)).save(buffer, format="JPEG")
    results = clients(server.port, [buffer.getvalue() for buffer in small], args.clients, seconds=args.seconds)
    latencies = np.array([seconds for _, status, seconds, _ in results if status == 200])
    print(f"2. {args.clients} clients, 64x48 photos, {args.seconds:g} s: {len(latencies) / args.seconds:.0f} req/s, "
          f"p50 {np.percentile(latencies, 50) * 1000:.1f} ms, p99 {np.percentile(latencies, 99) * 1000:.1f} ms, "
          f"statuses {dict(Counter(status for _, status, _, _ in results))}")

    rss: list[float] = []
    timer = threading.Timer(10, lambda: rss.append(server.rss_mb()))
    timer.start()
    results = clients(server.port, bodies, args.load_clients, seconds=args.load_seconds)
    rss.append(server.rss_mb())
    statuses = Counter(status for _, status, _, _ in results)
    unequal = Counter(compare(content, reference, index) for index, status, _, content in results if status == 200)
    growth = (rss[-1] / rss[0] - 1) * 100 if len(rss) == 2 else float("nan")
    print(f"3. {args.load_clients} clients, {args.load_seconds:g} s: statuses {dict(statuses)}; 200s against a "
          f"local predict of their photo: {dict(unequal)}; RSS {rss[0]:.0f} MB after 10 s, {rss[-1]:.0f} MB at the end ({growth:+.1f} %)")

    print("4. faults:")
    for line in faults(server, bodies[0], work / "local"):
        print(f"   {line}")
    stop = threading.Event()
    drained: list[tuple[int, int, float, bytes]] = []
    load = threading.Thread(target=lambda: drained.extend(clients(server.port, bodies, args.load_clients,
                                                                  seconds=60, stop=stop)))
    load.start()
    time.sleep(3)
    code = server.stop()
    stop.set()
    load.join()
    after = Counter(status for _, status, _, _ in drained)
    print(f"   SIGTERM during a {args.load_clients}-client load: exit status {code}; answers {dict(after)} "
          f"(-1: a client's request refused or its connection closed by the stop; that client then stops)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
