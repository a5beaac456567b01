"""Every model on every sample through the streaming engine, for both evaluation runners (`folder_run.run_eval` on
folders and lists, `benchmark_run.SetRun` on the standard sets): samples read ahead, predicted, scored behind.

Each model streams the samples through its own engine; a sample is scored only when every model could score it,
and the first reason one failed is kept (a `Failure`), so every model's numbers cover the same images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Generic, Mapping, Sequence, TypeVar

from anydepth_cli.evaluation.failures import Failure

if TYPE_CHECKING:  # the engine's predictors import torch, which reading and scoring do not need
    from anydepth_cli.inference.engine import Engine, Loaded, Prediction
    from anydepth_cli.inference.predictor import MapPredictor

S = TypeVar("S")
R = TypeVar("R")


@dataclass
class Scores(Generic[S, R]):
    """Per sample scored by every model, in input order: the sample and each model's score; and the samples left out,
    each named with the first reason."""

    scored: list[tuple[S, dict[str, R]]] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)


def score_models(samples: Sequence[S], predictors: Mapping[str, MapPredictor],
                 engine: Callable[[str, MapPredictor], Engine], load: Callable[[S], Loaded],
                 score: Callable[[str, S, Loaded, Prediction], R], describe: Callable[[S], str],
                 progress: Callable[[], None] | None = None) -> Scores[S, R]:
    """`score(model, sample, loaded, prediction)` of every model (run by `engine(model, predictor)`) on every sample
    `load` reads; a sample that fails is named by `describe(sample)`; `progress` is called once per sample, as the last
    model finishes it."""
    results: list[dict[str, R]] = [{} for _ in samples]
    failed: dict[int, str] = {}
    names = list(predictors)
    for number, name in enumerate(names):
        last = number == len(names) - 1
        indices = [i for i in range(len(samples)) if i not in failed]
        if last and progress is not None:
            for _ in failed:  # left out by an earlier model
                progress()
        for outcome in engine(name, predictors[name]).stream(indices, lambda i: load(samples[i]),
                                                             lambda i, loaded, prediction:
                                                             score(name, samples[i], loaded, prediction)):
            if outcome.error is not None:
                failed[outcome.job] = str(outcome.error)
            else:
                results[outcome.job][name] = outcome.result
            if last and progress is not None:
                progress()
    scores: Scores[S, R] = Scores()
    for index, sample in enumerate(samples):
        if index in failed:
            scores.failures.append(Failure(describe(sample), failed[index]))
        else:
            scores.scored.append((sample, results[index]))
    return scores

