"""Whether the network is being traced for export, when caches keyed by Python sizes must be bypassed."""

from __future__ import annotations

import torch


def is_exporting() -> bool:
    """True while torch.export traces the network (always False on a torch without `torch.compiler.is_exporting`)."""
    check = getattr(torch.compiler, "is_exporting", None)
    return bool(check is not None and check())
