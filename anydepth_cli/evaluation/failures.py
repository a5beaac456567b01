"""Inputs the evaluation runners could not score, as both record them and both reports list them."""

from __future__ import annotations

from typing import NamedTuple, Sequence

MAX_LISTED_FAILURES = 20


class Failure(NamedTuple):
    """An input left out of the scores: what names it (its image path) and the first reason it failed."""

    input: str
    reason: str


def skipped_section(items: Sequence[str]) -> list[str]:
    """The Markdown `Skipped` section listing `items` (at most MAX_LISTED_FAILURES, then how many more); no lines
    when there are none."""
    if not items:
        return []
    lines = ["", "## Skipped", ""]
    lines += [f"- {item}" for item in items[:MAX_LISTED_FAILURES]]
    if len(items) > MAX_LISTED_FAILURES:
        lines.append(f"- … and {len(items) - MAX_LISTED_FAILURES} more")
    return lines
