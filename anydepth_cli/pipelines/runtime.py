"""From command-line choices to a ready predictor (weights, device, precision) and its tile geometry."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from anydepth_cli.weights.choice import choose_weights, weights_path

if TYPE_CHECKING:
    from anydepth_cli.inference.predictor import DepthPredictor
    from anydepth_cli.inference.tiling import TileConfig


def open_predictor(model: str | None, checkpoint: str | None, arch: Path | None, device: str = "auto",
                   precision: str = "auto", batch_size: int = 4, input_size: int | None = None,
                   local_rank: int | None = None) -> tuple[DepthPredictor, str]:
    """A predictor for the chosen weights (downloaded if needed) and a label naming them; `local_rank` picks a
    launched process's own GPU.

    The weights are found first, before torch is imported, so that weights which cannot be had
    (the Hub unreachable, nothing cached) are reported within a second.
    """
    choice = choose_weights(model, checkpoint, arch)
    weights = weights_path(choice)
    from anydepth_cli.inference.predictor import DepthPredictor, select_device, select_dtype
    from anydepth_cli.models.fuse import prepare_for_inference
    from anydepth_cli.weights.checkpoint import load_network

    target = select_device(device, local_rank)
    dtype = select_dtype(precision, target)
    network = prepare_for_inference(load_network(choice.config, weights, target))
    predictor = DepthPredictor(network, input_size or choice.input_size, target, dtype, batch_size)
    return predictor, choice.label


def tile_config(predictor: DepthPredictor, tile_size: int | None = None, overlap: int | None = None) -> TileConfig:
    """Tile geometry for `predictor`: the defaults of `default_tile_config`, tiles batched like images on GPUs
    and at most CPU_TILE_BATCH to a batch on the CPU (where each tile's activations are large)."""
    from anydepth_cli.inference.tiling import CPU_TILE_BATCH, default_tile_config

    batch = predictor.batch_size if predictor.device.type != "cpu" else min(predictor.batch_size, CPU_TILE_BATCH)
    return default_tile_config(predictor.input_size, batch, tile_size, overlap)
