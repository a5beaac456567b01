"""What a training run tells its user while it runs and when it is over (no torch here: the CLI imports it early)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anydepth_cli.training.sources import DataReport


class Reporter:
    """What the loop tells its user; this base class says nothing (the processes other than rank 0)."""

    def note(self, message: str) -> None:
        """A one-line remark."""

    def scanning(self, total: int) -> None:
        """Sample checks are starting."""

    def scanned(self) -> None:
        """One sample was checked."""

    def data(self, report: DataReport) -> None:
        """What the data check kept and left out."""

    def start(self, total: int, done: int, images_per_step: int) -> None:
        """Training starts at step `done` of `total`."""

    def step(self, step: int, loss: float, lr: float, images_per_second: float) -> None:
        """Step `step` (1-based) is done."""

    def validated(self, step: int, abs_rel: float, delta1: float) -> None:
        """A validation result."""

    def stop(self) -> None:
        """Training is over (finished or not)."""


@dataclass
class TrainSummary:
    """How a run went and where its files are."""

    output: Path
    steps: int
    start_step: int
    total_steps: int
    seconds: float
    images: int
    final_loss: float
    data: DataReport
    best_val: tuple[int, float, float] | None = None
    """(step, AbsRel, δ1) of the best validation."""
    read_failures: list[str] = field(default_factory=list)
    """Samples that could not be read during training (they added nothing to the loss)."""
