"""Start-up time of `anydepth --help` and `--version` (target: under 0.5 s each on this machine).

    python benchmarks/startup.py [--runs 7] [--limit 0.5]

Each command runs `--runs` times as a fresh `python -m anydepth_cli` process; the median wall
time is reported. Exits 1 when a median is over `--limit` seconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = (["--version"], ["--help"], ["predict", "--help"])


def median_seconds(args: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "anydepth_cli", *args], capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--limit", type=float, default=0.5)
    args = parser.parse_args()
    worst = 0.0
    for command in COMMANDS:
        seconds = median_seconds(command, args.runs)
        worst = max(worst, seconds)
        print(f"anydepth {' '.join(command):<16} {seconds * 1000:6.0f} ms (median of {args.runs})")
    return 0 if worst <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
