"""The model card an exported network carries in its metadata: what its numbers mean and what input it expects."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from anydepth_cli import __version__
from anydepth_cli.errors import UsageError
from anydepth_cli.inference.preprocess import MEAN, STD
from anydepth_cli.models.config import ACTIVATIONS, OUTPUT_KINDS, NetworkConfig

PREFIX = "anydepth."
OPTIONAL = ("precision", "calibration_images")
"""Card fields files exported before they were recorded lack: those were fp32 exports."""


@dataclass(frozen=True)
class ModelCard:
    """The model's name, output kind and final activation, patch and input size, normalisation, architecture, the
    anydepth-cli version that wrote it, and the precision it was exported in with the number of photos an int8 export
    was calibrated on."""

    model: str
    output: str
    activation: str
    patch_size: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    architecture: dict[str, Any]
    version: str = __version__
    precision: str = "fp32"
    calibration_images: int = 0

    @classmethod
    def of(cls, model: str, config: NetworkConfig, input_size: int, precision: str = "fp32",
           calibration_images: int = 0) -> "ModelCard":
        """The card of a network built from `config`, run at `input_size`, with this package's normalisation."""
        return cls(model, config.output, config.activation, config.patch_size, input_size,
                   tuple(float(v) for v in MEAN), tuple(float(v) for v in STD), config.to_dict(),
                   precision=precision, calibration_images=calibration_images)

    def to_metadata(self) -> dict[str, str]:
        """The card as string key/value pairs (`anydepth.output`, …) for ONNX `metadata_props`."""
        return {PREFIX + key: value if isinstance(value, str) else json.dumps(value)
                for key, value in vars(self).items()}

    @classmethod
    def from_metadata(cls, props: Mapping[str, str], source: str) -> "ModelCard":
        """Read the card back from metadata key/value pairs; `source` names the file in error messages."""
        fields = cls.__dataclass_fields__
        found = {key[len(PREFIX):]: value for key, value in props.items()
                 if key.startswith(PREFIX) and key[len(PREFIX):] in fields}
        missing = [key for key in fields if key not in found and key not in OPTIONAL]
        if missing:
            raise UsageError(f"{source} has no anydepth model card ({', '.join(PREFIX + k for k in missing)} "
                             "missing): export it with `anydepth export`")
        try:
            values = {key: value if fields[key].type == "str" else json.loads(value) for key, value in found.items()}
            card = cls(**{**values, "mean": tuple(values["mean"]), "std": tuple(values["std"])})
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{source} has an unreadable model card: {exc}") from None
        if card.output not in OUTPUT_KINDS or card.activation not in ACTIVATIONS:
            raise UsageError(f"{source}: unknown output {card.output!r} or activation {card.activation!r}")
        if not (isinstance(card.patch_size, int) and isinstance(card.input_size, int) and card.patch_size > 0):
            raise UsageError(f"{source}: patch and input size must be positive integers")
        if card.mean != tuple(float(v) for v in MEAN) or card.std != tuple(float(v) for v in STD):
            raise UsageError(f"{source} expects a normalisation (mean {card.mean}, std {card.std}) "
                             "this version does not prepare")
        return card
