"""The CPU memory policy: freed blocks are reused instead of being faulted in afresh, and the memory guard counts
what the process holds free."""

from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the policy is glibc's")

FAULTS_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import torch
    import torch.nn.functional as F
    from anydepth_cli.inference import memory

    applied = memory.keep_freed_memory() if sys.argv[1] == "keep" else False
    torch.set_num_threads(1)
    x, w = torch.randn(1, 64, 400, 400), torch.randn(64, 64, 3, 3)  # 41 MB maps, above glibc's mmap threshold
    faults = []
    for _ in range(16):  # a convolution and two activations of its size, as in a head
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        y = F.conv2d(x, w, padding=1)
        z = torch.relu(y) * 2
        del y, z
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(json.dumps({"applied": applied, "faults": faults, "retained": memory.retained_free_bytes()}))
""")


def run(policy: str) -> dict:
    result = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, policy], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_kept_memory_serves_the_next_allocations_without_page_faults():
    default, kept = run("default"), run("keep")
    pages = 3 * 41_000_000 // 4096  # the three maps of one step
    assert not default["applied"] and min(default["faults"][1:]) > pages / 2  # mapped afresh, page by page
    # Kept: most repeats fault nothing; now and then fragmentation places one map past the heap's top.
    repeats = kept["faults"][1:]
    assert kept["applied"] and statistics.median(repeats) < pages / 100 and kept["retained"] >= 41_000_000
    assert sum(repeats) < sum(default["faults"][1:]) / 10


def test_the_memory_guard_counts_what_the_process_holds_free(monkeypatch):
    import torch

    from anydepth_cli.inference import memory

    monkeypatch.setattr(memory, "_meminfo_available", lambda: 10**9)
    monkeypatch.setattr(memory, "_cgroup_headroom", lambda: None)
    monkeypatch.setattr(memory, "_address_space_headroom", lambda: None)
    monkeypatch.setattr(memory, "retained_free_bytes", lambda: 3 * 10**8)
    assert memory.available_memory(torch.device("cpu")) == 13 * 10**8
