"""Checkouts with the real git binary against a repository made in tmp_path."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.pipelines.git import GitError, UnknownRevision, checkout, reachable, read_file_at

GIT_ENV = {
    "GIT_AUTHOR_NAME": "Ada Lovelace",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada Lovelace",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}


@dataclass
class Origin:
    path: Path
    first: str  # tagged v1, on main
    second: str  # head of main
    feature: str  # head of feature


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV}
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


@pytest.fixture
def origin(tmp_path: Path) -> Origin:
    repo = tmp_path / "origin"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / ".idp").mkdir()
    (repo / ".idp" / "pipeline.yaml").write_text("stages: []\n")
    (repo / "version.txt").write_text("1\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "First commit")
    first = git(repo, "rev-parse", "HEAD")
    git(repo, "tag", "-a", "v1", "-m", "release 1")
    (repo / "version.txt").write_text("2\n")
    git(repo, "commit", "-q", "-am", "Second commit")
    second = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    (repo / "feature.txt").write_text("feature\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "Feature work")
    feature = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "main")
    return Origin(repo, first, second, feature)


async def test_checkout_a_branch(origin: Origin, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    result = await checkout(str(origin.path), "main", ws)
    assert result.sha == origin.second
    assert result.subject == "Second commit"
    assert (result.author_name, result.author_email) == ("Ada Lovelace", "ada@example.com")
    assert (ws / "version.txt").read_text() == "2\n"
    assert git(ws, "rev-parse", "HEAD") == origin.second
    result = await checkout(str(origin.path), "feature", tmp_path / "ws2")
    assert result.sha == origin.feature
    assert (tmp_path / "ws2" / "feature.txt").exists()


async def test_checkout_a_full_sha_shallow_over_file_url(origin: Origin, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    result = await checkout(origin.path.as_uri(), origin.first, ws, depth=1)
    assert result.sha == origin.first and result.subject == "First commit"
    assert (ws / "version.txt").read_text() == "1\n"
    assert git(ws, "rev-list", "--count", "HEAD") == "1"  # shallow


async def test_checkout_a_tag_and_a_short_sha(origin: Origin, tmp_path: Path) -> None:
    result = await checkout(str(origin.path), "v1", tmp_path / "a")
    assert result.sha == origin.first
    result = await checkout(str(origin.path), origin.feature[:10], tmp_path / "b")
    assert result.sha == origin.feature
    assert (tmp_path / "b" / "feature.txt").read_text() == "feature\n"


async def test_a_workspace_is_reused(origin: Origin, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    await checkout(str(origin.path), "main", ws)
    (ws / "version.txt").write_text("dirty\n")
    result = await checkout(str(origin.path), "v1", ws)
    assert result.sha == origin.first
    assert (ws / "version.txt").read_text() == "1\n"


async def test_unknown_sha_and_ref(origin: Origin, tmp_path: Path) -> None:
    # UnknownRevision: the repository was read, what was asked for is not in it
    with pytest.raises(UnknownRevision, match="unknown ref or commit 'deadbeef") as info:
        await checkout(str(origin.path), "deadbeef" * 5, tmp_path / "a")
    assert str(origin.path) in info.value.message
    with pytest.raises(UnknownRevision, match="unknown ref or commit 'no-such-branch'"):
        await checkout(str(origin.path), "no-such-branch", tmp_path / "b")
    with pytest.raises(UnknownRevision, match="not a valid ref"):
        await checkout(str(origin.path), "--upload-pack=evil", tmp_path / "c")


async def test_unreachable_repository(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="git fetch failed") as info:
        await checkout(str(tmp_path / "missing"), "main", tmp_path / "ws")
    assert "does not appear to be a git repository" in info.value.message
    assert not isinstance(info.value, UnknownRevision)  # the host's failure, not the ref's


async def test_credentials_never_appear_in_errors(tmp_path: Path) -> None:
    url = "http://robot:url-password@127.0.0.1:9/org/repo.git"
    with pytest.raises(GitError) as info:
        await checkout(url, "main", tmp_path / "ws", token="tok-s3cret", timeout=30)
    message = info.value.message
    assert "127.0.0.1:9" in message
    assert "url-password" not in message and "tok-s3cret" not in message
    assert "robot" not in message
    # the token was never written into the workspace's git config
    assert "tok-s3cret" not in (tmp_path / "ws" / ".git" / "config").read_text()


async def test_missing_git_binary(
    origin: Origin, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(GitError, match="git is not installed"):
        await checkout(str(origin.path), "main", tmp_path / "ws")


async def test_read_file_at(origin: Origin) -> None:
    url = str(origin.path)
    assert await read_file_at(url, origin.first, ".idp/pipeline.yaml") == "stages: []\n"
    assert await read_file_at(url, origin.first, "version.txt") == "1\n"
    assert await read_file_at(url, origin.second, "version.txt") == "2\n"
    assert await read_file_at(url, "feature", "feature.txt") == "feature\n"
    assert await read_file_at(url, origin.first, "feature.txt") is None
    assert await read_file_at(url, origin.first, ".idp") is None  # a directory
    with pytest.raises(GitError, match="unknown ref or commit"):
        await read_file_at(url, "0" * 40, "version.txt")
    with pytest.raises(GitError, match="not a path inside"):
        await read_file_at(url, origin.first, "../etc/passwd")


async def test_reachable_tells_a_branch_or_tag_commit_from_one_only_another_ref_holds(
    origin: Origin, tmp_path: Path
) -> None:
    url = f"file://{origin.path}"
    git(origin.path, "checkout", "-q", "--detach", "main")
    (origin.path / "pr.txt").write_text("pull request\n")
    git(origin.path, "add", ".")
    git(origin.path, "commit", "-q", "-m", "only a pull request ref holds this")
    hidden = git(origin.path, "rev-parse", "HEAD")
    git(origin.path, "update-ref", "refs/pull/7/head", hidden)
    git(origin.path, "checkout", "-q", "main")
    for sha, expected in ((origin.feature, True), (origin.first, True), (hidden, False)):
        workspace = tmp_path / f"ws-{sha[:7]}"
        done = await checkout(url, sha, workspace)  # the host serves the commit by its SHA
        assert done.sha == sha
        assert await reachable(url, sha, workspace) is expected
