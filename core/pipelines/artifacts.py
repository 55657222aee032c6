"""The artifact store: files a step declared, copied out of its workspace after it ran.

Layout: `<root>/<run_id>/<name>` for a single file, `<root>/<run_id>/<name>.tar.gz` for a
directory or a glob matching several files (members named by their path in the workspace).
A later collection of the same name in the same run (a retried step) replaces the earlier
one; each write is atomic (temporary file, then rename).

Safety: a declared path is relative and has no `..`; every match is resolved (symlinks
followed) and must stay inside the workspace, else the artifact is refused and reported
(`refused`) rather than copied. Symlinks inside a directory are stored as the file they
point to when that file is in the workspace; symlinked directories are not followed.
A declared path that matches nothing is reported in `missing`. Downloads go through `open`,
which only serves regular files under the root.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import mimetypes
import os
import re
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from pydantic import BaseModel, Field

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_GLOB_CHARS = set("*?[")
ARCHIVE_CONTENT_TYPE = "application/gzip"


class ArtifactError(Exception):
    """A declaration or a store path that can never be valid (bad name, `..`, absolute)."""


class ArtifactNotFound(ArtifactError):
    """No stored artifact at that path (or the path points outside the store)."""


class ArtifactDecl(BaseModel):
    """What a step declares; the same fields as `core.pipelines.definition.Artifact`."""

    name: str
    path: str = Field(description="Relative to the workspace: a file, a directory or a glob")
    type: str | None = None


class StoredArtifact(BaseModel):
    name: str
    type: str | None
    path_in_store: str = Field(description="`<run_id>/<name>[.tar.gz]`, relative to the root")
    size: int
    sha256: str
    content_type: str
    step_name: str
    files: int = Field(description="How many workspace files it holds (1 for a plain file)")


class CollectResult(BaseModel):
    artifacts: list[StoredArtifact] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list, description="Names that matched nothing")
    refused: list[str] = Field(
        default_factory=list, description="`name: reason` for matches leaving the workspace"
    )


class _Refused(Exception):
    pass


def _check_segment(value: str, what: str) -> None:
    if not _NAME.match(value):
        raise ArtifactError(
            f"{what} {value!r} must be letters, digits, '.', '_' or '-' (at most 128)"
        )


def _inside(path: Path, root: Path) -> bool:
    return path == root or path.is_relative_to(root)


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # -- collecting ------------------------------------------------------------------------
    async def collect(
        self,
        run_id: str,
        step_name: str,
        workdir: Path,
        declared: Sequence[ArtifactDecl],
    ) -> CollectResult:
        """Copy each declared artifact of a finished step into the store."""
        _check_segment(run_id, "run id")
        decls = [ArtifactDecl.model_validate(d, from_attributes=True) for d in declared]
        for decl in decls:
            _check_segment(decl.name, "artifact name")
            parts = decl.path.replace("\\", "/").split("/")
            if not decl.path or decl.path.startswith("/") or ".." in parts:
                raise ArtifactError(
                    f"artifact {decl.name!r}: path {decl.path!r} must be relative to the "
                    "workspace, without '..'"
                )
        return await asyncio.to_thread(self._collect, run_id, step_name, Path(workdir), decls)

    def _collect(
        self, run_id: str, step_name: str, workdir: Path, decls: list[ArtifactDecl]
    ) -> CollectResult:
        result = CollectResult()
        base = workdir.resolve()
        target_dir = self.root / run_id
        for decl in decls:
            try:
                files = self._files(base, decl.path)
            except _Refused as exc:
                result.refused.append(f"{decl.name}: {exc}")
                continue
            if files is None:
                result.missing.append(decl.name)
                continue
            target_dir.mkdir(parents=True, exist_ok=True)
            single = len(files) == 1 and not (base / decl.path).is_dir() and files[0][2]
            if single:
                source = files[0][0]
                dest = target_dir / decl.name
                content_type = _content_type(files[0][1])
                _atomic_write(dest, functools.partial(_copy_into, source))
            else:
                dest = target_dir / f"{decl.name}.tar.gz"
                content_type = ARCHIVE_CONTENT_TYPE
                _atomic_write(dest, functools.partial(_tar_into, files))
            size, digest = _measure(dest)
            result.artifacts.append(
                StoredArtifact(
                    name=decl.name,
                    type=decl.type,
                    path_in_store=f"{run_id}/{dest.name}",
                    size=size,
                    sha256=digest,
                    content_type=content_type,
                    step_name=step_name,
                    files=len(files),
                )
            )
        return result

    def _files(self, base: Path, pattern: str) -> list[tuple[Path, str, bool]] | None:
        """(real source, name in the archive, matched-as-a-file) for every file a declared
        path covers; None when it matches nothing."""
        if _GLOB_CHARS & set(pattern):
            matches = sorted(base.glob(pattern))
        else:
            candidate = base / pattern
            matches = [candidate] if os.path.lexists(candidate) else []
        if not matches:
            return None
        files: list[tuple[Path, str, bool]] = []
        for match in matches:
            real = match.resolve()
            if not _inside(real, base):
                raise _Refused(f"{match.relative_to(base)} leads outside the workspace")
            if real.is_file():
                files.append((real, match.relative_to(base).as_posix(), True))
            elif real.is_dir():
                files += self._walk(base, match, real)
        if not files:
            return None
        seen: set[str] = set()
        unique = []
        for item in files:
            if item[1] not in seen:
                seen.add(item[1])
                unique.append(item)
        return unique

    def _walk(self, base: Path, shown: Path, real_dir: Path) -> list[tuple[Path, str, bool]]:
        found: list[tuple[Path, str, bool]] = []
        for dirpath, dirnames, filenames in os.walk(real_dir, followlinks=False):
            dirnames.sort()
            for filename in sorted(filenames):
                path = Path(dirpath) / filename
                real = path.resolve()
                if not _inside(real, base):
                    rel = (shown / path.relative_to(real_dir)).relative_to(base)
                    raise _Refused(f"{rel} leads outside the workspace")
                if real.is_file():
                    arcname = (shown / path.relative_to(real_dir)).relative_to(base)
                    found.append((real, arcname.as_posix(), False))
        return found

    # -- serving ---------------------------------------------------------------------------
    def path(self, path_in_store: str) -> Path:
        """The file of a stored artifact; ArtifactNotFound for anything else (a path leaving
        the store, a directory, a symlink, nothing)."""
        parts = path_in_store.replace("\\", "/").split("/")
        if (
            not path_in_store
            or path_in_store.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
        ):
            raise ArtifactNotFound(f"no artifact at {path_in_store!r}")
        root = self.root.resolve()
        candidate = root.joinpath(*parts)
        if candidate.is_symlink() or not _inside(candidate.resolve(), root):
            raise ArtifactNotFound(f"no artifact at {path_in_store!r}")
        if not candidate.is_file():
            raise ArtifactNotFound(f"no artifact at {path_in_store!r}")
        return candidate

    def open(self, path_in_store: str) -> BinaryIO:
        """Open a stored artifact for reading (binary), for downloads."""
        return self.path(path_in_store).open("rb")

    async def delete_run(self, run_id: str) -> None:
        """Remove every artifact of a run (retention)."""
        _check_segment(run_id, "run id")
        await asyncio.to_thread(shutil.rmtree, self.root / run_id, True)


_ENCODED = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz"}


def _content_type(name: str) -> str:
    """What a download is: `app.tgz` is gzip data (not a tar), as a browser should save it."""
    kind, encoding = mimetypes.guess_type(name)
    if encoding is not None:
        return _ENCODED.get(encoding, "application/octet-stream")
    return kind or "application/octet-stream"


def _copy_into(source: Path, fh: BinaryIO) -> None:
    with source.open("rb") as src:
        shutil.copyfileobj(src, fh, 1024 * 1024)


def _tar_into(members: list[tuple[Path, str, bool]], fh: BinaryIO) -> None:
    with tarfile.open(fileobj=fh, mode="w:gz") as tar:
        for real, arcname, _ in members:
            info = tar.gettarinfo(str(real), arcname=arcname)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with real.open("rb") as src:
                tar.addfile(info, src)


def _atomic_write(dest: Path, write: Callable[[BinaryIO], None]) -> None:
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _measure(path: Path) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()
