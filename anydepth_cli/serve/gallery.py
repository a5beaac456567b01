"""`anydepth serve --gallery DIR`: a read-only view of an earlier `predict` run's outputs. No path a client gives
reaches outside DIR: `..`, absolute paths, encoded slashes and symlinks leading out are all refused."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from fastapi import FastAPI
from fastapi.params import Depends
from fastapi.responses import FileResponse

from anydepth_cli.errors import UsageError
from anydepth_cli.io.images import InputItem
from anydepth_cli.io.writers import is_temp_name
from anydepth_cli.models.config import OUTPUT_KINDS
from anydepth_cli.pipelines.geometry import CameraOptions
from anydepth_cli.pipelines.photos import OutputOptions
from anydepth_cli.serve.errors import ApiError

COLOR_SUFFIX = "_depth.png"
"""Every photo of a predict run has its colour depth picture, `photo_depth.png`: the gallery's entries."""
MAX_ENTRIES = 10_000
RAW_FORMATS = ("npy", "png16", "exr")


class Gallery:
    """The outputs of a predict run under `root`, grouped per photo."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise UsageError(f"--gallery {root} is not a folder")
        self.root = root.resolve()

    def entries(self) -> list[dict[str, object]]:
        """Per photo (by its colour picture): its name and its output files by role, relative to the root."""
        found = []
        for folder, names, files in os.walk(self.root):
            names[:] = sorted(name for name in names if not name.startswith("."))
            for name in sorted(files):
                if name.endswith(COLOR_SUFFIX) and not name.startswith(".") and len(found) < MAX_ENTRIES:
                    found.append(self._entry(Path(folder), name[: -len(COLOR_SUFFIX)]))
        return [entry for entry in found if entry["files"]]

    def _entry(self, folder: Path, stem: str) -> dict[str, object]:
        relative = (folder / stem).relative_to(self.root)
        item = InputItem(folder / stem, relative)
        files: dict[str, str] = {}
        for raw in RAW_FORMATS:
            for kind in OUTPUT_KINDS:
                every = OutputOptions(self.root, "inferno", raw=raw, side_by_side=True, confidence=True,
                                      camera=CameraOptions(cloud=True, mesh=True)).paths(item, kind)
                for role, path in every.items():
                    key = f"{role}:{raw}" if role == "raw" else role
                    if key not in files and self._inside(path):
                        files[key] = path.relative_to(self.root).as_posix()
        return {"name": relative.as_posix(), "files": files}

    def _inside(self, path: Path) -> bool:
        """Whether `path` is a regular file that is, once symlinks are followed, inside the root."""
        try:
            resolved = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return False
        return resolved.is_file() and resolved.is_relative_to(self.root) and not is_temp_name(path.name)

    def file(self, relative: str) -> Path | None:
        """The file at a client's `relative` path (with `/` between parts), or None when there is none inside
        the root."""
        parts = PurePosixPath(relative).parts
        if (not relative or relative.startswith("/") or "\\" in relative or "\0" in relative
                or any(part in (".", "..") or part.startswith(".") for part in relative.split("/"))):
            return None
        path = self.root.joinpath(*parts)
        return path.resolve() if self._inside(path) else None

    def mount(self, app: FastAPI, authorized: Depends) -> None:
        """`GET /v1/gallery` (the entries) and `GET /gallery/{path}` (one file) on `app`."""
        @app.get("/v1/gallery", summary="The results of the predict run the server was started with",
                 dependencies=[authorized])
        def listing() -> dict:
            return {"entries": self.entries()}

        @app.get("/gallery/{path:path}", summary="One file of the gallery", dependencies=[authorized])
        def gallery_file(path: str) -> FileResponse:
            found = self.file(path)
            if found is None:
                raise ApiError(404, "no such file in the gallery")
            return FileResponse(found)
