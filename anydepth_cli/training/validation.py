"""Validation during training: the network scored on the held-out sources as `anydepth eval` scores it."""

from __future__ import annotations

import copy

import torch

from anydepth_cli.evaluation.presets import get_preset
from anydepth_cli.evaluation.folder_run import run_eval
from anydepth_cli.inference.predictor import DepthPredictor
from anydepth_cli.models.network import DepthNetwork
from anydepth_cli.training.options import TrainOptions
from anydepth_cli.training.sources import Source


def validate(network: DepthNetwork, sources: list[Source], size: int, device: torch.device, dtype: torch.dtype,
             options: TrainOptions) -> tuple[float, float, list[tuple[str, str]]]:
    """Mean AbsRel and δ1 of the network on the validation sources, aligned in its own space (as `anydepth eval`),
    and the samples that could not be scored (image, reason).

    An fp64 network is validated through an fp32 copy.
    """
    if dtype == torch.float64:
        network, dtype = copy.deepcopy(network).float(), torch.float32
    predictor = DepthPredictor(network, size, device, dtype, options.batch_size)
    result = run_eval([source.data for source in sources], {"model": predictor}, get_preset("default"),
                      batch_size=options.batch_size)
    return result.aggregates["model"]["abs_rel"], result.aggregates["model"]["delta1"], result.failures
