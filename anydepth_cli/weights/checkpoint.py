"""Reading checkpoint files and loading them, strictly, into a network built from its config."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from anydepth_cli.errors import CheckpointError
from anydepth_cli.models.config import NetworkConfig
from anydepth_cli.models.network import DepthNetwork, build_network

# (encoder prefix, head prefix) of every layout the published and training checkpoints use.
PREFIX_LAYOUTS: tuple[tuple[str, str], ...] = (
    ("pretrained.", "depth_head."),
    ("backbone.pretrained.", "head."),
    ("model.backbone.pretrained.", "model.head."),
    ("0.encoder.backbone.", "0.decoder."),
    ("aggregator.", "depth_head."),
)
LAYOUT_PREFIXES: dict[str, tuple[str, str]] = {
    "dav2": PREFIX_LAYOUTS[0],
    "da3": PREFIX_LAYOUTS[2],
    "anydepth-train": PREFIX_LAYOUTS[3],
    "vggt": PREFIX_LAYOUTS[4],
}
"""The (encoder, head) prefixes of each `NetworkConfig.layout`."""
WRAPPER_KEYS = ("model", "state_dict")
OPTIONAL_KEYS = ("encoder.mask_token", "encoder.patch_embed.mask_token")
WHOLE_MODEL_ENCODERS = {"vggt": "aggregator."}
"""Encoders whose published weights come inside a whole model's checkpoint: the prefix of the encoder's part."""


def read_state_dict(path: Path, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a `.pth`/`.pt` (read with `weights_only=True`) or `.safetensors` file, unwrapped; with `mmap`, a
    zip-format PyTorch file is memory-mapped, so tensors never used (a whole model's other parts) are never read."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        else:
            data = _torch_load(path, mmap)
    except Exception as exc:  # torch and safetensors raise many unrelated types for damaged files
        lines = str(exc).strip().splitlines()
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
            raise CheckpointError(f"{path.name} holds Python objects besides tensors; refusing to unpickle them "
                                  "(only plain tensor checkpoints are loaded)") from None
        raise CheckpointError(f"cannot read checkpoint {path.name}: {lines[0] if lines else type(exc).__name__}") from None
    while isinstance(data, dict):
        wrapper = next((k for k in WRAPPER_KEYS if isinstance(data.get(k), dict)), None)
        if wrapper is None:
            break
        data = data[wrapper]
    if not isinstance(data, dict):
        raise CheckpointError(f"{path.name} does not hold a state dict")
    tensors = {k: v for k, v in data.items() if isinstance(k, str) and torch.is_tensor(v)}
    if not tensors:
        raise CheckpointError(f"{path.name} holds no tensors")
    return tensors


def _torch_load(path: Path, mmap: bool) -> object:
    """A PyTorch file's contents, memory-mapped if asked and the file's format allows it."""
    if mmap:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
    return torch.load(path, map_location="cpu", weights_only=True)


def to_network_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a checkpoint's keys from whichever known layout it uses to `encoder.*` / `head.*`."""
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}

    def coverage(layout: tuple[str, str]) -> int:
        return sum(k.startswith(layout) for k in state)

    encoder_prefix, head_prefix = max(PREFIX_LAYOUTS, key=coverage)
    renamed, unknown = {}, []
    for key, value in state.items():
        if key.startswith(encoder_prefix):
            renamed["encoder." + key[len(encoder_prefix):]] = value
        elif key.startswith(head_prefix):
            renamed["head." + key[len(head_prefix):]] = value
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"unexpected keys outside {encoder_prefix}* / {head_prefix}*: {_names(unknown)}")
    return renamed


def _mismatches(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> list[str]:
    """What keeps `state` from loading strictly into a module with state dict `expected`."""
    missing = [k for k in expected if k not in state and k not in OPTIONAL_KEYS]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)}≠{tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {_names(unexpected)}")
    if wrong:
        problems.append(f"wrong shape {_names(wrong)}")
    return problems


def load_network(config: NetworkConfig, path: Path, device: torch.device | str = "cpu") -> DepthNetwork:
    """Network of `config` with the weights of `path`; any missing, unexpected or misshapen key is an error."""
    state = to_network_keys(read_state_dict(path))
    network = build_network(config, device="meta")
    expected = network.state_dict()
    problems = _mismatches(expected, state)
    if problems:
        raise CheckpointError(f"{Path(path).name} does not match the architecture: " + "; ".join(problems))
    for key in OPTIONAL_KEYS:
        if key in expected:
            state.setdefault(key, torch.zeros_like(expected[key], device="cpu"))
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    network.load_state_dict(state, strict=True, assign=True)
    return network.to(device).eval()


def load_encoder_weights(network: DepthNetwork, path: Path) -> None:
    """Load a plain backbone state dict (`blocks.*`, `patch_embed.*`, …, as DINOv2/DINOv3 publish them) into
    `network.encoder`, strictly; a checkpoint whose keys carry one encoder prefix of PREFIX_LAYOUTS is accepted too.
    For a VGGT encoder, VGGT's whole-model checkpoint gives its `aggregator.*` part."""
    state = _encoder_part(read_state_dict(path, mmap=True), network.config.encoder, Path(path).name)
    prefix = next((enc for enc, _ in PREFIX_LAYOUTS if all(k.startswith(enc) for k in state)), "")
    state = {"encoder." + k[len(prefix):]: v for k, v in state.items()}
    expected = {k: v for k, v in network.state_dict().items() if k.startswith("encoder.")}
    problems = _mismatches(expected, state)
    if problems:
        raise CheckpointError(f"{Path(path).name} does not match the encoder: " + "; ".join(problems))
    for key in OPTIONAL_KEYS:
        if key in expected:
            state.setdefault(key, expected[key])
    with torch.no_grad():
        for key, value in state.items():
            expected[key].copy_(value)


def _encoder_part(state: dict[str, torch.Tensor], encoder: str, name: str) -> dict[str, torch.Tensor]:
    """The keys of `state` that hold the encoder: for an encoder published inside a whole model
    (WHOLE_MODEL_ENCODERS), those under its prefix, which must exist; else all of them."""
    prefix = WHOLE_MODEL_ENCODERS.get(encoder)
    if prefix is None:
        return state
    part = {k: v for k, v in state.items() if k.startswith(prefix)}
    if not part:
        raise CheckpointError(f"{name} holds no {prefix}* keys, where a {encoder} checkpoint keeps its encoder "
                              f"(first key: {next(iter(state))})")
    return part


def state_in_layout(network: DepthNetwork, layout: str) -> dict[str, torch.Tensor]:
    """The network's state dict with the keys of `layout` (a key of LAYOUT_PREFIXES), on the CPU."""
    encoder_prefix, head_prefix = LAYOUT_PREFIXES[layout]
    renames = {"encoder.": encoder_prefix, "head.": head_prefix}
    out = {}
    for key, value in network.state_dict().items():
        stage, rest = key.split(".", 1)
        out[renames[stage + "."] + rest] = value.detach().cpu()
    return out


def _names(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")
