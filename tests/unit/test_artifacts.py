"""The artifact store on a real file system: files, directories, globs, escapes."""

from __future__ import annotations

import hashlib
import os
import tarfile
from pathlib import Path

import pytest

from core.pipelines.artifacts import (
    ArtifactDecl,
    ArtifactError,
    ArtifactNotFound,
    ArtifactStore,
)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "dist").mkdir(parents=True)
    (ws / "dist" / "app.whl").write_bytes(b"wheel-bytes")
    (ws / "dist" / "sub").mkdir()
    (ws / "dist" / "sub" / "notes.txt").write_text("notes")
    (ws / "report.html").write_text("<h1>ok</h1>")
    (ws / "logs").mkdir()
    (ws / "logs" / "a.log").write_text("a")
    (ws / "logs" / "b.log").write_text("bb")
    return ws


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "store")


def decl(name: str, path: str, type: str | None = None) -> ArtifactDecl:
    return ArtifactDecl(name=name, path=path, type=type)


async def test_a_file_is_copied_with_size_and_sha256(store: ArtifactStore, workdir: Path) -> None:
    result = await store.collect("run1", "build", workdir, [decl("report", "report.html", "html")])
    assert result.missing == [] and result.refused == []
    [art] = result.artifacts
    content = b"<h1>ok</h1>"
    assert art.path_in_store == "run1/report"
    assert (art.name, art.type, art.step_name, art.files) == ("report", "html", "build", 1)
    assert art.size == len(content)
    assert art.sha256 == hashlib.sha256(content).hexdigest()
    assert art.content_type == "text/html"
    with store.open(art.path_in_store) as fh:
        assert fh.read() == content


async def test_a_directory_is_packed(store: ArtifactStore, workdir: Path, tmp_path: Path) -> None:
    result = await store.collect("run1", "build", workdir, [decl("dist", "dist")])
    [art] = result.artifacts
    assert art.path_in_store == "run1/dist.tar.gz"
    assert art.content_type == "application/gzip" and art.files == 2
    stored = tmp_path / "store" / "run1" / "dist.tar.gz"
    data = stored.read_bytes()
    assert art.size == len(data) and art.sha256 == hashlib.sha256(data).hexdigest()
    with tarfile.open(stored) as tar:
        assert sorted(tar.getnames()) == ["dist/app.whl", "dist/sub/notes.txt"]
        member = tar.extractfile("dist/app.whl")
        assert member is not None and member.read() == b"wheel-bytes"


async def test_globs(store: ArtifactStore, workdir: Path, tmp_path: Path) -> None:
    result = await store.collect(
        "run1",
        "test",
        workdir,
        [decl("logs", "logs/*.log"), decl("wheel", "dist/*.whl"), decl("none", "*.xml")],
    )
    assert result.missing == ["none"]
    logs, wheel = result.artifacts
    assert logs.path_in_store == "run1/logs.tar.gz" and logs.files == 2
    with tarfile.open(tmp_path / "store" / "run1" / "logs.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["logs/a.log", "logs/b.log"]
    assert wheel.path_in_store == "run1/wheel" and wheel.size == len(b"wheel-bytes")


async def test_missing_paths_are_reported(store: ArtifactStore, workdir: Path) -> None:
    (workdir / "empty").mkdir()
    result = await store.collect(
        "run1", "s", workdir, [decl("gone", "nope.txt"), decl("empty", "empty")]
    )
    assert result.artifacts == [] and result.missing == ["gone", "empty"]


@pytest.mark.parametrize("path", ["../secret.txt", "/etc/passwd", "dist/../../secret.txt"])
async def test_declared_paths_leaving_the_workspace_are_refused(
    store: ArtifactStore, workdir: Path, path: str
) -> None:
    with pytest.raises(ArtifactError, match="without '..'"):
        await store.collect("run1", "s", workdir, [decl("x", path)])


async def test_bad_names_are_refused(store: ArtifactStore, workdir: Path) -> None:
    with pytest.raises(ArtifactError, match="artifact name"):
        await store.collect("run1", "s", workdir, [decl("../x", "report.html")])
    with pytest.raises(ArtifactError, match="run id"):
        await store.collect("../run", "s", workdir, [decl("x", "report.html")])


async def test_symlinks_out_of_the_workspace_are_refused(
    store: ArtifactStore, workdir: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (workdir / "link.txt").symlink_to(secret)
    (workdir / "dist" / "sneaky").symlink_to(secret)
    (workdir / "outdir").symlink_to(tmp_path)
    result = await store.collect(
        "run1",
        "s",
        workdir,
        [
            decl("link", "link.txt"),
            decl("dist", "dist"),
            decl("viadir", "outdir/secret.txt"),
            decl("ok", "report.html"),
        ],
    )
    assert [a.name for a in result.artifacts] == ["ok"]
    assert [r.split(":")[0] for r in result.refused] == ["link", "dist", "viadir"]
    assert all("outside the workspace" in r for r in result.refused)
    for path in (tmp_path / "store").rglob("*"):
        assert b"top secret" not in path.read_bytes() if path.is_file() else True


async def test_symlinks_inside_the_workspace_are_followed(
    store: ArtifactStore, workdir: Path
) -> None:
    (workdir / "latest.html").symlink_to(workdir / "report.html")
    [art] = (await store.collect("run1", "s", workdir, [decl("latest", "latest.html")])).artifacts
    with store.open(art.path_in_store) as fh:
        assert fh.read() == b"<h1>ok</h1>"


async def test_recollecting_replaces(store: ArtifactStore, workdir: Path) -> None:
    await store.collect("run1", "s", workdir, [decl("report", "report.html")])
    (workdir / "report.html").write_text("v2")
    [art] = (await store.collect("run1", "s", workdir, [decl("report", "report.html")])).artifacts
    assert art.size == 2
    assert os.listdir(store.root / "run1") == ["report"]  # no temporary files left


async def test_open_refuses_traversal(store: ArtifactStore, workdir: Path, tmp_path: Path) -> None:
    await store.collect("run1", "s", workdir, [decl("report", "report.html")])
    (tmp_path / "outside.txt").write_text("no")
    (store.root / "run1" / "alias").symlink_to(tmp_path / "outside.txt")
    for bad in [
        "../outside.txt",
        "/etc/passwd",
        "run1/../../outside.txt",
        "run1",
        "",
        "run1/alias",
    ]:
        with pytest.raises(ArtifactNotFound):
            store.open(bad)
    with pytest.raises(ArtifactNotFound):
        store.open("run1/nothing")


async def test_compressed_files_are_served_as_what_they_are(
    store: ArtifactStore, workdir: Path
) -> None:
    (workdir / "app.tgz").write_bytes(b"\x1f\x8b")
    (workdir / "data.bin").write_bytes(b"\0")
    result = await store.collect(
        "run9", "build", workdir, [decl("app", "app.tgz"), decl("data", "data.bin")]
    )
    types = {a.name: a.content_type for a in result.artifacts}
    assert types == {"app": "application/gzip", "data": "application/octet-stream"}
