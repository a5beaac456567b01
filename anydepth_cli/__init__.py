"""anydepth-cli: relative depth maps with AnyDepth's Simple Depth Transformer.

`anydepth_cli.load(...)` returns a model for use from Python (see `anydepth_cli.pipelines.api`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_API = ("load", "DepthModel", "DepthResult")


def __getattr__(name: str) -> Any:
    # The API imports torch: only on first use, so that `anydepth --version` and `--help` stay fast.
    if name in _API:
        from anydepth_cli.pipelines import api

        return getattr(api, name)
    raise AttributeError(f"module 'anydepth_cli' has no attribute {name!r}")


__all__ = ["__version__", *_API]
