"""Writing point clouds and triangle meshes as binary glTF (GLB) with vertex colours, through trimesh (the
optional extra `mesh`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from anydepth_cli.errors import UsageError
from anydepth_cli.io.writers import atomic_write

INSTALL_HINT = "GLB output needs trimesh: pip install 'anydepth-cli[mesh]'"


def check_glb_available() -> None:
    """UsageError naming the extra to install when trimesh is missing."""
    try:
        import trimesh  # noqa: F401
    except ImportError:
        raise UsageError(INSTALL_HINT) from None


def write_glb(path: Path, vertices: np.ndarray, colors: np.ndarray, faces: np.ndarray | None = None,
              metadata: dict[str, Any] | None = None) -> None:
    """Write N vertices (N×3) with colours (N×3 uint8) as a GLB point cloud, or with `faces` (M×3) as a mesh,
    `metadata` in the scene's extras. Written atomically."""
    check_glb_available()
    import trimesh

    rgba = np.concatenate([np.asarray(colors, dtype=np.uint8), np.full((len(colors), 1), 255, np.uint8)], axis=1)
    if faces is None:
        geometry = trimesh.PointCloud(np.asarray(vertices, dtype=np.float32), colors=rgba)
    else:
        geometry = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_colors=rgba, process=False,
                                   validate=False)
    scene = trimesh.Scene(geometry)
    scene.metadata.update(metadata or {})
    data = scene.export(file_type="glb")
    atomic_write(Path(path), lambda temp: temp.write_bytes(data))
