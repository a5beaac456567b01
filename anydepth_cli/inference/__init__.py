"""Inference: preprocessing, the batched predictor, alignment and tiling."""
