"""The eval loop: every model on every sample, aligned in the chosen space and scored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np

from anydepth_cli.datasets.archive import Sample
from anydepth_cli.datasets.family import Reader, SampleSet
from anydepth_cli.errors import InputError, UsageError
from anydepth_cli.evaluation.failures import Failure
from anydepth_cli.evaluation.metrics import KINDS, UNALIGNED, KindCheck, aggregate, evaluate_sample
from anydepth_cli.evaluation.presets import Preset
from anydepth_cli.evaluation.scoring import score_models
from anydepth_cli.evaluation.unaligned import metric_models, settle_unaligned
from anydepth_cli.inference.engine import Engine, Loaded, Prediction
from anydepth_cli.models.config import OUTPUT_KINDS, space_of

if TYPE_CHECKING:  # the predictors' module imports torch, which scoring workers do not need
    from anydepth_cli.inference.predictor import MapPredictor

ALIGNMENT_MODES: tuple[str, ...] = ("model", *KINDS, "auto")
"""How to choose the space each model is aligned in: its declared kind, a kind for every model, or
the kind its predictions fit better."""


def check_alignment_mode(mode: str) -> str:
    """`mode` if it is one of ALIGNMENT_MODES; UsageError otherwise."""
    if mode not in ALIGNMENT_MODES:
        raise UsageError(f"--output-kind must be one of {', '.join(ALIGNMENT_MODES)}, not {mode!r}")
    return mode


@dataclass(frozen=True)
class Alignment:
    """The space one model was aligned in (`kind`), the kind it declares, and why that space.

    `source` is `declared`, `override` (a kind given for every model) or `detected` (the kind its
    predictions fit better, from `check`); `check` is set when both kinds were tried.
    """

    kind: str
    declared: str
    source: str
    check: KindCheck | None = None

    @property
    def label(self) -> str:
        """E.g. `depth (declared)`."""
        return f"{self.kind} ({self.source})"

    @property
    def agrees(self) -> bool:
        """Whether the space aligned in is the declared kind."""
        return self.kind == self.declared


@dataclass
class EvalResult:
    """Per-image rows for every model, per-model aggregates and alignments, and the samples that could not be scored.

    Each row holds `image`, `depth`, `model`, the metrics, `scale`, `shift`, `n_valid`,
    `aligned_as` (depth or disparity) and `kind_source` (as `Alignment.source`);
    `aggregates[model]` is `metrics.aggregate` over that model's rows; `alignments[model]` says
    which space it was aligned in; `failures` names the samples skipped for every model (by image path).
    """

    preset: str
    models: list[str]
    rows: list[dict[str, object]] = field(default_factory=list)
    aggregates: dict[str, dict[str, float]] = field(default_factory=dict)
    alignments: dict[str, Alignment] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)


def _load(reader: Reader, sample: Sample, preset: Preset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB, GT depth and validity of a sample; InputError if unreadable or it has fewer than two valid pixels."""
    rgb = reader.rgb(sample)
    gt, valid = reader.truth(sample, rgb.shape[:2])
    if int(preset.valid_mask(gt, valid).sum()) < 2:
        raise InputError(f"{reader.where(sample.depth)}: fewer than two valid ground-truth pixels under preset {preset.name!r}")
    return rgb, gt, valid


def _choose(declared: str, mode: str, rows: Mapping[str, list[dict[str, object]]]) -> Alignment:
    """The alignment of a model declaring `declared` under `mode`, given its rows per kind tried."""
    if mode == "model":
        return Alignment(declared, declared, "declared")
    if mode != "auto":
        return Alignment(mode, declared, "override")
    check = KindCheck(aggregate(rows["depth"])["abs_rel"], aggregate(rows["disparity"])["abs_rel"])
    if check.detected is None:
        return Alignment(declared, declared, "declared", check)
    return Alignment(check.detected, declared, "detected", check)


def run_eval(
    data: SampleSet | Sequence[SampleSet],
    predictors: Mapping[str, MapPredictor],
    preset: Preset,
    progress: Callable[[], None] | None = None,
    *,
    batch_size: int = 1,
    output_kind: str = "model",
    unaligned: bool = False,
) -> EvalResult:
    """Evaluate every predictor on every sample of `data` (one set or several) under `preset`.

    Each model streams the pairs through its engine (`evaluation.scoring`): read ahead, predicted
    `batch_size` at a time, each map brought to its ground truth's size by the model's own rule (as
    it is to the image's), scored behind.
    `output_kind` (one of ALIGNMENT_MODES) picks the space each model is aligned in: `model`,
    the predictor's `output_kind`; `depth` or `disparity`, that for all; `auto`, both are tried
    and the one with the lower mean AbsRel is reported. Each set's reader reads its ground truth the way its
    dataset defines (decoder, mask, depth cap). A sample that cannot be read or has no
    valid pixels is recorded in `failures` and skipped. `progress` is called once per sample. With `unaligned`,
    each metric model is also scored as it is, in metres (`unaligned_label`), beside its aligned scores.
    """
    if not predictors:
        raise UsageError("no model to evaluate")
    if batch_size < 1:
        raise UsageError(f"batch size must be at least 1, got {batch_size}")
    mode = check_alignment_mode(output_kind)
    declared = _declared_kinds(predictors)
    spaces = {name: KINDS if mode == "auto" else (kind if mode == "model" else mode,) for name, kind in declared.items()}
    for name in metric_models(predictors) if unaligned else ():
        spaces[name] = (*spaces[name], UNALIGNED)
    items = [(one.reader, sample) for one in ([data] if isinstance(data, SampleSet) else data) for sample in one.samples]

    def load(index: int) -> Loaded:
        rgb, gt, valid = _load(*items[index], preset)
        return Loaded(rgb, gt.shape, (gt, valid))

    def score(name: str, index: int, loaded: Loaded, prediction: Prediction) -> dict[str, dict[str, object]]:
        gt, valid = loaded.data
        reader, sample = items[index]
        return {kind: {"image": reader.where(sample.rgb), "depth": reader.where(sample.depth), "model": name,
                       **evaluate_sample(prediction.values, gt, valid, preset, kind)} for kind in spaces[name]}

    scores = score_models(range(len(items)), predictors, lambda _, predictor: Engine(predictor, batch_size), load,
                          score, lambda index: items[index][0].where(items[index][1].rgb), progress)
    result = EvalResult(preset=preset.name, models=list(predictors))
    result.failures = scores.failures
    for name in predictors:
        rows = {kind: [by_model[name][kind] for _, by_model in scores.scored] for kind in spaces[name]}
        _settle(result, name, _choose(declared[name], mode, rows), rows)
        if UNALIGNED in rows:
            settle_unaligned(result, name, rows[UNALIGNED], Alignment(UNALIGNED, "metric", "metric"))
    return result


def _declared_kinds(predictors: Mapping[str, MapPredictor]) -> dict[str, str]:
    """The space of the output kind each model declares (metric models: depth); UsageError for one that is not a
    kind."""
    declared = {name: predictor.output_kind for name, predictor in predictors.items()}
    for name, kind in declared.items():
        if kind not in OUTPUT_KINDS:
            raise UsageError(f"model {name!r} declares output {kind!r}, not one of {', '.join(OUTPUT_KINDS)}")
    return {name: space_of(kind) for name, kind in declared.items()}


def _settle(result: EvalResult, name: str, alignment: Alignment, rows: Mapping[str, list[dict[str, object]]]) -> None:
    """Keep a model's rows of the space it is aligned in, and their means."""
    chosen = rows[alignment.kind]
    for row in chosen:
        row.update(aligned_as=alignment.kind, kind_source=alignment.source)
    result.rows.extend(chosen)
    result.alignments[name] = alignment
    result.aggregates[name] = aggregate(chosen)
