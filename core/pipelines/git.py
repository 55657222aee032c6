"""Check out a commit with the real `git` binary (no shell, no library): the workspace of a
pipeline run, and single files at a commit (the pipeline definition).

A checkout is `git init`, `git remote add origin <url>`, `git fetch [--depth N] origin
<ref-or-sha>` and `git checkout --detach`. A server that refuses to fetch a bare SHA (or a
short SHA, which no server can fetch) gets a full fetch of branches and tags, then the name
is resolved locally. Works with local paths, file:// and https:// URLs (ssh too, with the
worker's ssh agent).

Credentials: an optional `token` is sent as an `Authorization: Basic` header through
`http.extraHeader`, given to git in its environment (`GIT_CONFIG_COUNT`/`KEY`/`VALUE`, so it is
not on a command line other users can read and never written to `.git/config`). The token and
any `user:password@` in the URL are redacted from every error message. git runs without a
terminal prompt, with no system config, and with the worker's environment reduced to what
git needs (PATH, HOME, proxies, CA bundles, ssh agent).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import signal
import tempfile
import time
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

DEFAULT_TOKEN_USERNAME = "x-access-token"  # GitHub; GitLab and Gitea accept any user name
_PASSED_ENV = (
    "PATH",
    "HOME",
    "SSH_AUTH_SOCK",
    "GIT_SSH_COMMAND",
    "GIT_SSL_CAINFO",
    "GIT_SSL_CAPATH",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
_STDERR_LINES = 8


class GitError(Exception):
    """A checkout or read failed; the message (redacted) says why, with git's last words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnknownRevision(GitError):
    """The repository was read but has no such branch, tag or commit (or the name is not one
    a ref can have): what was asked for is at fault, not the Git host."""


class CheckoutResult(BaseModel):
    sha: str
    subject: str
    author_name: str
    author_email: str
    authored_at: datetime


class _Git:
    """git commands for one repository URL, with one deadline and one set of secrets."""

    def __init__(self, repo_url: str, *, token: str | None, username: str, timeout: float):
        self.repo_url = repo_url
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout
        self.secrets: list[str] = []
        self.env = {k: v for k, v in os.environ.items() if k in _PASSED_ENV}
        self.env.update(
            {
                "GIT_TERMINAL_PROMPT": "0",
                "GIT_CONFIG_NOSYSTEM": "1",
                "LC_ALL": "C",
                "GIT_ASKPASS": "",
                "SSH_ASKPASS": "",
            }
        )
        config = {"gc.auto": "0", "maintenance.auto": "false", "advice.detachedHead": "false"}
        if token:
            basic = base64.b64encode(f"{username}:{token}".encode()).decode()
            config["http.extraHeader"] = f"Authorization: Basic {basic}"
            self.secrets += [token, basic]
        for i, (key, value) in enumerate(config.items()):
            self.env[f"GIT_CONFIG_KEY_{i}"] = key
            self.env[f"GIT_CONFIG_VALUE_{i}"] = value
        self.env["GIT_CONFIG_COUNT"] = str(len(config))

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return _URL_USERINFO.sub(r"\g<scheme>***@", text)

    @property
    def shown_url(self) -> str:
        return self.redact(self.repo_url)

    async def run(self, cwd: Path, *args: str, what: str) -> str:
        """Run `git <args>` in `cwd`; its stdout, or GitError with the end of its stderr."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise GitError(f"{what} timed out after {self.timeout:g}s ({self.shown_url})")
        try:
            proc = await asyncio.create_subprocess_exec(
                "git",
                *args,
                cwd=cwd,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise GitError("git is not installed: no `git` executable on PATH") from exc
        try:
            out, err = await asyncio.wait_for(proc.communicate(), remaining)
        except TimeoutError:
            await _kill(proc)
            raise GitError(f"{what} timed out after {self.timeout:g}s ({self.shown_url})") from None
        except BaseException:
            await _kill(proc)
            raise
        if proc.returncode != 0:
            raise GitError(self.failure(what, err))
        return out.decode("utf-8", errors="replace")

    def failure(self, what: str, stderr: bytes) -> str:
        lines = [
            line.strip()
            for line in stderr.decode("utf-8", errors="replace").splitlines()
            if line.strip()
        ]
        tail = " | ".join(lines[-_STDERR_LINES:]) or "no output"
        return self.redact(f"{what} failed ({self.shown_url}): {tail}")

    async def init(self, workspace: Path) -> None:
        workspace.mkdir(parents=True, exist_ok=True)
        if not (workspace / ".git").exists():
            await self.run(workspace, "init", "-q", what="git init")
        remotes = (await self.run(workspace, "remote", what="git remote")).split()
        verb = "set-url" if "origin" in remotes else "add"
        await self.run(workspace, "remote", verb, "origin", self.repo_url, what="git remote")

    async def fetch_commit(self, workspace: Path, sha_or_ref: str, depth: int | None) -> str:
        """Fetch `sha_or_ref` into `workspace`; the full SHA of its commit."""
        shallow = [f"--depth={depth}"] if depth else []
        try:
            await self.run(
                workspace,
                "fetch",
                "--no-tags",
                "--quiet",
                *shallow,
                "origin",
                sha_or_ref,
                what="git fetch",
            )
            return await self.resolve(workspace, "FETCH_HEAD", sha_or_ref)
        except GitError as first:
            if time.monotonic() >= self.deadline:
                raise
            # a server refusing a SHA want, a short SHA: fetch everything, resolve locally
            try:
                await self.run(
                    workspace,
                    "fetch",
                    "--quiet",
                    "--force",
                    "origin",
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                    what="git fetch",
                )
            except GitError:
                raise first from None
        for candidate in (sha_or_ref, f"origin/{sha_or_ref}"):
            with contextlib.suppress(GitError):
                return await self.resolve(workspace, candidate, sha_or_ref)
        raise UnknownRevision(
            self.redact(
                f"unknown ref or commit {sha_or_ref!r} in {self.repo_url}: "
                "no branch, tag or commit of that name"
            )
        )

    async def resolve(self, workspace: Path, name: str, asked: str) -> str:
        out = await self.run(
            workspace,
            "rev-parse",
            "--verify",
            "--quiet",
            "--end-of-options",
            f"{name}^{{commit}}",
            what=f"resolving {asked!r}",
        )
        return out.strip()


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(Exception):
        await asyncio.shield(proc.wait())


def _check_ref(sha_or_ref: str) -> None:
    if not sha_or_ref or sha_or_ref.startswith("-") or any(c.isspace() for c in sha_or_ref):
        raise UnknownRevision(f"not a valid ref or commit: {sha_or_ref!r}")


async def checkout(
    repo_url: str,
    sha_or_ref: str,
    workspace: Path,
    *,
    depth: int | None = None,
    timeout: float = 600,
    token: str | None = None,
    token_username: str = DEFAULT_TOKEN_USERNAME,
) -> CheckoutResult:
    """Check out `sha_or_ref` (a full or short SHA, a branch, a tag or a full ref name) of
    `repo_url` into `workspace` as a detached HEAD. `depth=None` fetches the whole history
    of that commit; `depth=1` only the commit. An existing checkout in `workspace` is reused
    and forced to the commit. `timeout` bounds the whole operation."""
    _check_ref(sha_or_ref)
    git = _Git(repo_url, token=token, username=token_username, timeout=timeout)
    workspace = Path(workspace)
    await git.init(workspace)
    sha = await git.fetch_commit(workspace, sha_or_ref, depth)
    await git.run(workspace, "checkout", "--quiet", "--force", "--detach", sha, what="git checkout")
    fmt = "%H%x00%s%x00%an%x00%ae%x00%aI"
    out = await git.run(workspace, "log", "-1", f"--format={fmt}", sha, what="git log")
    full, subject, name, email, authored = out.rstrip("\n").split("\x00")
    return CheckoutResult(
        sha=full,
        subject=subject,
        author_name=name,
        author_email=email,
        authored_at=datetime.fromisoformat(authored),
    )


async def read_file_at(
    repo_url: str,
    sha: str,
    path: str,
    *,
    timeout: float = 120,
    token: str | None = None,
    token_username: str = DEFAULT_TOKEN_USERNAME,
) -> str | None:
    """The text of `path` at commit (or ref) `sha` of `repo_url`, or None when the commit has
    no such file. Fetches only that commit (depth 1) into a temporary repository; GitError
    when the commit cannot be fetched."""
    _check_ref(sha)
    rel = path.strip("/")
    if not rel or ".." in rel.split("/"):
        raise GitError(f"not a path inside the repository: {path!r}")
    git = _Git(repo_url, token=token, username=token_username, timeout=timeout)
    with tempfile.TemporaryDirectory(prefix="idp-git-") as tmp:
        repo = Path(tmp)
        await git.init(repo)
        commit = await git.fetch_commit(repo, sha, 1)
        try:
            kind = await git.run(repo, "cat-file", "-t", f"{commit}:{rel}", what="git cat-file")
        except GitError:
            return None
        if kind.strip() != "blob":
            return None
        return await git.run(repo, "cat-file", "blob", f"{commit}:{rel}", what="git cat-file")


async def reachable(
    repo_url: str,
    sha: str,
    workspace: Path,
    *,
    timeout: float = 600,
    token: str | None = None,
    token_username: str = DEFAULT_TOKEN_USERNAME,
) -> bool:
    """Whether commit `sha` (checked out in `workspace`) is reachable from a branch or a tag of
    `repo_url`: fetches every branch and tag, then asks git which contain it. A commit only a
    fork or a pull request ref holds (hosts serve those by SHA too) is not."""
    _check_ref(sha)
    git = _Git(repo_url, token=token, username=token_username, timeout=timeout)
    await git.run(
        workspace,
        "fetch",
        "--quiet",
        "--force",
        "origin",
        "+refs/heads/*:refs/remotes/origin/*",
        "+refs/tags/*:refs/tags/*",
        what="git fetch",
    )
    out = await git.run(
        workspace,
        "for-each-ref",
        "--count=1",
        "--format=%(refname)",
        f"--contains={sha}",
        "refs/remotes/origin/",
        "refs/tags/",
        what="git for-each-ref",
    )
    return bool(out.strip())


def rewrite_url(url: str, rewrites: dict[str, str]) -> str:
    """`url` with its longest matching prefix replaced, like git's `url.<base>.insteadOf`
    (the GIT_URL_REWRITES setting: clone from a mirror, or from a local path in tests)."""
    best = max((prefix for prefix in rewrites if url.startswith(prefix)), key=len, default=None)
    if best is None:
        return url
    return rewrites[best] + url[len(best) :]
