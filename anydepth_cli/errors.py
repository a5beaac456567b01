"""Typed errors: each carries a one-line message for the user and the exit code it maps to."""

from __future__ import annotations


class AnyDepthError(Exception):
    """Base class for every error the CLI reports as one line instead of a traceback."""

    exit_code: int = 2


class UsageError(AnyDepthError):
    """A bad argument or option combination."""


class CheckpointError(AnyDepthError):
    """A checkpoint that cannot be read or does not match its architecture."""


class HubError(AnyDepthError):
    """Weights that cannot be downloaded and are not cached."""


class InputError(AnyDepthError):
    """One input file that cannot be used (corrupt, not an image, too large); the batch goes on."""

    exit_code = 1


class MachineError(AnyDepthError):
    """A machine without what the run needs before it starts (memory for the network's weights)."""

    exit_code = 1


class OutputError(AnyDepthError):
    """An output location that cannot be written."""


class TrainingError(AnyDepthError):
    """A training run that has to stop (non-finite loss, out of memory); its last checkpoint is kept."""

    exit_code = 1


class MissingExtraError(UsageError):
    """An optional dependency that is not installed; the message says which extra installs it."""

    def __init__(self, module: str, extra: str = "onnx") -> None:
        super().__init__(f"{module} is not installed: pip install \"anydepth-cli[{extra}]\"")


class ExportError(AnyDepthError):
    """A network that cannot be exported, or whose export does not reproduce it."""
