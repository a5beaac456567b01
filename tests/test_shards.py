"""Sharded runs: shares from --shard or the launcher, disjoint and complete, byte-identical to one run."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from anydepth_cli.errors import UsageError
from anydepth_cli.pipelines.shards import Shard, resolve_shard
from conftest import cli_env, save_photo, tiny_model_args

SIZES = [(96, 64), (80, 112), (64, 64), (120, 72), (72, 100), (88, 88), (100, 60)]


def photo_tree(folder: Path) -> None:
    for i, size in enumerate(SIZES):
        save_photo(folder / ("sub" if i % 3 else "") / f"p{i}.png", *size, seed=i)


def file_digests(folder: Path) -> dict[str, str]:
    """Relative path → sha256 of every output file, the shard summaries left out."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.startswith("anydepth-shard-")}


def predict_command(photos: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "anydepth_cli", "predict", str(photos), "-o", str(out), "--raw", "npy",
            "--tile", "off", "--batch-size", "1", *extra, *tiny_model_args()]


def single_run(photos: Path, out: Path) -> dict[str, str]:
    """Write the photo tree into `photos`, predict it unsharded into `out`, return the outputs' digests."""
    photo_tree(photos)
    done = subprocess.run(predict_command(photos, out), env=cli_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return file_digests(out)


def test_shares_are_disjoint_complete_and_independent_of_order():
    items = [f"f{i:02d}" for i in range(23)]
    shares = [Shard(k, 4, "--shard").select(items, key=str) for k in range(4)]
    assert sorted(sum(shares, [])) == items
    assert shares == [Shard(k, 4, "--shard").select(items[::-1], key=str) for k in range(4)]
    assert max(map(len, shares)) - min(map(len, shares)) <= 1


@pytest.mark.parametrize("option,environ,expected", [
    ("1/3", {}, (1, 3, "--shard", None)),
    (None, {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}, (1, 2, "torchrun", 1)),
    ("auto", {"SLURM_PROCID": "3", "SLURM_STEP_NUM_TASKS": "4", "SLURM_LOCALID": "0"}, (3, 4, "srun", 0)),
    (None, {"SLURM_PROCID": "0", "SLURM_NTASKS": "4", "SLURM_LOCALID": "0"}, None),  # an sbatch script, no srun
    (None, {"RANK": "0", "WORLD_SIZE": "1"}, None),
    (None, {}, None),
    ("off", {"RANK": "1", "WORLD_SIZE": "2"}, None),
])
def test_the_shard_comes_from_the_option_or_the_launcher(option, environ, expected):
    shard = resolve_shard(option, environ)
    assert (shard and (shard.index, shard.count, shard.source, shard.local_rank)) == expected


@pytest.mark.parametrize("option,environ", [("3/3", {}), ("x", {}), ("auto", {}), (None, {"RANK": "a", "WORLD_SIZE": "2"})])
def test_bad_shards_are_usage_errors(option, environ):
    with pytest.raises(UsageError):
        resolve_shard(option, environ)


@pytest.mark.slow
def test_two_shards_write_exactly_what_one_run_writes(tmp_path):
    photos = tmp_path / "photos"
    expected = single_run(photos, tmp_path / "single")
    runs = [subprocess.Popen(predict_command(photos, tmp_path / "sharded", "--shard", f"{k}/2"), env=cli_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
    assert file_digests(tmp_path / "sharded") == expected
    records = [json.loads((tmp_path / "sharded" / f"anydepth-shard-{k}-of-2.json").read_text()) for k in range(2)]
    assert not set(records[0]["inputs"]) & set(records[1]["inputs"])
    assert sorted(records[0]["inputs"] + records[1]["inputs"]) == sorted(
        str(p.relative_to(photos)) for p in photos.rglob("*.png"))
    assert [r["written"] for r in records] == [len(r["inputs"]) for r in records]


@pytest.mark.slow
def test_torchrun_shards_by_itself(tmp_path):
    photos = tmp_path / "photos"
    expected = single_run(photos, tmp_path / "single")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m"]
    command = predict_command(photos, tmp_path / "launched")[2:]  # torchrun runs `-m anydepth_cli ...` itself
    done = subprocess.run(launcher + command, env=cli_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    assert file_digests(tmp_path / "launched") == expected
    assert sorted(p.name for p in (tmp_path / "launched").glob("anydepth-shard-*")) == [
        "anydepth-shard-0-of-2.json", "anydepth-shard-1-of-2.json"]
