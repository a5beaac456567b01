"""Scoring metric models as they are, in metres (`--align none`), beside their aligned scores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from anydepth_cli.evaluation.metrics import UNALIGNED, aggregate

if TYPE_CHECKING:
    from anydepth_cli.inference.predictor import MapPredictor


def metric_models(predictors: Mapping[str, MapPredictor]) -> list[str]:
    """The names of the models that answer in metres."""
    return [name for name, predictor in predictors.items() if predictor.output_kind == "metric"]


def unaligned_label(name: str) -> str:
    """The column under which a metric model's scores as it is, in metres, are reported."""
    return f"{name} (metres, unaligned)"


def settle_unaligned(result: Any, name: str, rows: list[dict[str, object]], alignment: Any) -> None:
    """Report a metric model's unaligned rows as a model of their own (aligned as `alignment` says), beside its
    aligned ones. `result` is the run's `runner.EvalResult` and `alignment` a `runner.Alignment` (the runner imports
    this module, so neither is named here)."""
    label = unaligned_label(name)
    for row in rows:
        row.update(model=label, aligned_as=UNALIGNED, kind_source="metric")
    result.rows.extend(rows)
    result.models.append(label)
    result.alignments[label] = alignment
    result.aggregates[label] = aggregate(rows)


def with_unaligned(predictors: Mapping[str, MapPredictor],
                   kinds: Mapping[str, str]) -> tuple[dict[str, MapPredictor], dict[str, str]]:
    """The benchmark runs' models and the spaces they are aligned in, each metric model added again under its
    `unaligned_label`, scored as it is."""
    extra = {unaligned_label(name): predictors[name] for name in metric_models(predictors)}
    return {**predictors, **extra}, {**kinds, **{label: UNALIGNED for label in extra}}


def check_some_metric(predictors: Mapping[str, MapPredictor]) -> None:
    """UsageError when `--align none` is asked of models none of which answers in metres."""
    from anydepth_cli.errors import UsageError

    if not metric_models(predictors):
        raise UsageError("--align none scores metres as they are, and no model here gives metres: add a metric "
                         "model (-m dav2-metric-hypersim-vitl, dav2-metric-vkitti-vitl, …)")
