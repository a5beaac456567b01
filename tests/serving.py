"""A real `anydepth serve` in a subprocess on 127.0.0.1 and a free port, running the tiny fixture network; it stops
by itself (SIGTERM, then kill) and leaves no process behind."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fixtures_dir import REPO, fixtures_dir

NETWORK = "tiny_dinov3_sdt"
MODEL_ARGS = ["--checkpoint", str(fixtures_dir() / f"{NETWORK}.pth"), "--arch", str(fixtures_dir() / f"{NETWORK}.json"),
              "--input-size", "32"]
READY_WITHIN = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "anydepth_cli", *args]


class Server:
    """`anydepth serve MODEL_ARGS *args` on a free port; `url`, `client` (with `token` when given), `stop()`."""

    def __init__(self, *args: str, token: str | None = None, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"anydepth-serve-{self.port}.log"
        command = cli("serve", *MODEL_ARGS, "--port", str(self.port), *args)
        self.process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=30)
        self.output = ""

    def wait_ready(self) -> Server:
        deadline = time.monotonic() + READY_WITHIN
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the server exited: {self.process.stdout.read().decode()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the server was not ready within {READY_WITHIN} s: {self.output}")

    def stop(self) -> int:
        """SIGTERM, and the exit status (killed after 60 s)."""
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.output = self.process.stdout.read().decode()
        self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> Server:
        return self.wait_ready()

    def __exit__(self, *_: object) -> None:
        self.stop()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of Prometheus text (0 when absent)."""
    wanted = name + ("{" + ",".join(f'{key}="{value}"' for key, value in labels.items()) + "}" if labels else "")
    for line in text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0
