"""Which weights to run: a registry model (downloaded from the Hub) or a local checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from anydepth_cli.errors import UsageError
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.registry import DEFAULT_MODEL, get_model


@dataclass(frozen=True)
class WeightsChoice:
    """A network description and where its weights are (a Hub file or a local path).

    `model` is the registry name when the weights are a registry model's published file.
    """

    label: str
    config: NetworkConfig
    input_size: int
    repo_id: str | None = None
    filename: str | None = None
    path: Path | None = None
    model: str | None = None


HUB_SCHEME = "hf://"


def parse_hub_reference(text: str) -> tuple[str, str] | None:
    """`hf://ORG/REPO/path/to/file.pth` → (repo id, file name); None for a local path."""
    if not text.startswith(HUB_SCHEME):
        return None
    parts = text[len(HUB_SCHEME):].split("/", 2)
    if len(parts) < 3 or not all(parts):
        raise UsageError(f"a Hub checkpoint is hf://ORG/REPO/FILE, not {text!r}")
    return f"{parts[0]}/{parts[1]}", parts[2]


def choose_weights(model: str | None, checkpoint: str | None, arch: Path | None) -> WeightsChoice:
    """`--model NAME`, or `--checkpoint FILE|hf://ORG/REPO/FILE` with `--arch FILE.json` (or `--model` for its architecture)."""
    if arch is not None and checkpoint is None:
        raise UsageError("--arch describes a local checkpoint: pass it with --checkpoint FILE")
    if checkpoint is None:
        spec = get_model(model or DEFAULT_MODEL)
        return WeightsChoice(spec.name, spec.config, spec.input_size, spec.repo_id, spec.filename, model=spec.name)
    if arch is not None:
        if model is not None:
            raise UsageError("pass either --model or --arch with --checkpoint, not both")
        config = NetworkConfig.from_file(arch)
    else:
        config = get_model(model or DEFAULT_MODEL).config
    input_size = config.default_input_size
    hub = parse_hub_reference(checkpoint)
    if hub is not None:
        return WeightsChoice(checkpoint, config, input_size, repo_id=hub[0], filename=hub[1])
    return WeightsChoice(Path(checkpoint).name, config, input_size, path=Path(checkpoint))


def weights_path(choice: WeightsChoice) -> Path:
    """The local file of `choice`, downloading it into the Hub cache first when needed."""
    if choice.path is not None:
        return choice.path
    from anydepth_cli.weights.hub import download

    return download(choice.repo_id, choice.filename, model=choice.model)


def encoder_weights_path(reference: str | Path) -> Path:
    """The local file of `--encoder-weights FILE|hf://ORG/REPO/FILE`, downloading a Hub file into the cache first."""
    hub = parse_hub_reference(str(reference))
    if hub is None:
        return Path(reference)
    from anydepth_cli.weights.hub import download

    return download(*hub)
