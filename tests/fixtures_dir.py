"""Where the shared parity fixtures are: $ANYDEPTH_FIXTURES_DIR, else ../shared/fixtures."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fixtures_dir() -> Path:
    return Path(os.environ.get("ANYDEPTH_FIXTURES_DIR") or REPO.parent / "shared" / "fixtures").resolve()
