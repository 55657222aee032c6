"""The README's walkthroughs, run as written against one `idp dev`, so the README cannot drift.

A walkthrough is a ```sh block right after a `<!-- walkthrough: NAME -->` comment (a section
that cannot run here says why: `<!-- walkthrough: NAME skip: REASON -->`); the block marked
`<!-- walkthrough: start -->` is the `make run` line they all need, whose settings the stack
gets. Each block is fed to a fresh `bash` as a paste would be, with only `IDP_API` (the stack's
API) and `IDP_DEMO_REPO` (a temporary repository instead of /tmp/idp-demo) set: first each
alone in reverse README order (so none relies on what an earlier one created or set), then all
in README order on the now used data (as a reader who tries them again does)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.deploy.local import alive
from core.settings import PROJECT_ROOT
from core.temporal.client import find_temporal_cli
from tests.e2e.stack import Stack

README = PROJECT_ROOT / "README.md"
# A walkthrough's own polls are bounded (2 minutes each); this only stops a hung block.
WALKTHROUGH_TIMEOUT = 600
DEMO_REPO = "/tmp/idp-demo"  # the README's local stand-in for GitHub
TOOLS = ("bash", "curl", "jq", "git", "openssl")

MARKED_BLOCK = re.compile(
    r"^<!-- walkthrough: (?P<name>[a-z][a-z0-9-]*)(?: skip: (?P<skip>[^\n]+?))? -->\n"
    r"```sh\n(?P<code>.*?)\n```$",
    re.M | re.S,
)
SH_BLOCK = re.compile(r"^```sh\n.*?\n```$", re.M | re.S)


@dataclass(frozen=True)
class Walkthrough:
    name: str
    code: str
    skip: str | None = None


def marked_blocks(text: str) -> list[Walkthrough]:
    """Every marked block of the README, in order (the start block included)."""
    return [Walkthrough(m["name"], m["code"], m["skip"]) for m in MARKED_BLOCK.finditer(text)]


def walkthroughs(text: str) -> list[Walkthrough]:
    return [w for w in marked_blocks(text) if w.name != "start"]


def try_sections(text: str) -> dict[str, str]:
    """The README's `## Try ...` sections by heading."""
    parts = re.split(r"^(## .+)$", text, flags=re.M)
    return {
        heading: body
        for heading, body in zip(parts[1::2], parts[2::2], strict=True)
        if heading.startswith("## Try")
    }


def start_settings(text: str, demo_repo: Path) -> dict[str, str]:
    """The settings of the README's start line (`NAME=VALUE ... make run`), with the demo
    repository moved to `demo_repo`."""
    (start,) = [w for w in marked_blocks(text) if w.name == "start"]
    words = shlex.split(start.code.replace("\\\n", " "))
    assert words[-2:] == ["make", "run"], start.code
    settings = dict(word.split("=", 1) for word in words[:-2])
    rewrites = settings["GIT_URL_REWRITES"]
    assert rewrites.endswith(f"=file://{DEMO_REPO}"), rewrites
    settings["GIT_URL_REWRITES"] = rewrites.replace(f"file://{DEMO_REPO}", demo_repo.as_uri())
    return settings


def test_every_try_section_is_a_walkthrough_that_stops_at_an_error() -> None:
    """What the e2e test below runs is what a reader pastes: every shell block of a `Try`
    section is marked, and each walkthrough has the form that stops at the first failing
    call (child bash with -euo pipefail, curl --fail-with-body), signs in itself and takes
    its API address from IDP_API."""
    text = README.read_text()
    marked = {m["code"] for m in MARKED_BLOCK.finditer(text)}
    sections = try_sections(text)
    assert sections
    for heading, body in sections.items():
        blocks = [block[len("```sh\n") : -len("\n```")] for block in SH_BLOCK.findall(body)]
        assert blocks, f"{heading} has no shell block"
        unmarked = [block for block in blocks if block not in marked]
        assert not unmarked, f"{heading} has shell blocks without a walkthrough marker"
        if heading != "## Try it":  # the start block's section
            assert "<!-- walkthrough: " in body, f"{heading} has no walkthrough"
    names = [w.name for w in walkthroughs(text)]
    assert len(names) == len(set(names)) >= 3, names
    for w in walkthroughs(text):
        lines = w.code.splitlines()
        assert lines[0] == "bash -euo pipefail <<'EOF'" and lines[-1] == "EOF", w.name
        assert "API=${IDP_API:-http://127.0.0.1:8000}" in lines[1], w.name
        assert "/auth/login" in w.code, f"{w.name} does not sign in"
        commands = re.sub(r"(^|\s)#.*$", "", w.code, flags=re.M)  # without the comments
        bare = re.findall(r"\bcurl (?!--fail-with-body)", commands)
        assert not bare, f"{w.name}: a curl call without --fail-with-body"
    assert "REPO=${IDP_DEMO_REPO:-" + DEMO_REPO + "}" in text
    assert start_settings(text, Path("/elsewhere"))["GIT_URL_REWRITES"].endswith(
        "file:///elsewhere"
    )


def said(name: str, path: str) -> tuple[str, ...]:
    """What the README says a walkthrough's output shows."""
    if name == "promotion":  # Alice's own approval is refused; the Slack press records nothing
        return ("someone else must approve it", "Slack press: 200")
    if name == "pipeline":  # a push whose test fails
        return ('"error": "exited with code 3"',)
    if name == "provisioning" and shutil.which("pulumi", path=path) is None:
        return ("the Pulumi CLI is not installed",)
    return ()


@dataclass
class Ran:
    name: str
    returncode: int
    output: str
    seconds: float


def run_walkthrough(walkthrough: Walkthrough, env: dict[str, str], cwd: Path) -> Ran:
    """The block pasted into a fresh non-interactive bash, in a process group of its own."""
    began = time.monotonic()
    proc = subprocess.Popen(
        ["bash", "--noprofile", "--norc"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(walkthrough.code + "\n", timeout=WALKTHROUGH_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        output += f"\n(stopped: still running after {WALKTHROUGH_TIMEOUT} s)"
    return Ran(walkthrough.name, proc.returncode, output, time.monotonic() - began)


def stop_deployments(data_dir: Path) -> None:
    """Stop the versions the promotion walkthrough deployed: local deployments outlive
    `idp dev` by design; their process groups are recorded under the data dir."""
    for record in data_dir.glob("deployments/*/*/current.json"):
        pid = int(json.loads(record.read_text())["pid"])
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    text = README.read_text()
    s = Stack(tmp_path / "data", extra_settings=start_settings(text, tmp_path / "demo"))
    try:
        yield s
    finally:
        if s.process is not None and s.process.poll() is None:
            try:
                s.interrupt()
            finally:
                if s.process.poll() is None:
                    s.process.kill()
                    s.process.wait()
        stop_deployments(s.data_dir)


@pytest.mark.e2e
def test_readme_walkthroughs_run_alone_in_reverse_and_in_order(
    stack: Stack, tmp_path: Path
) -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    assert not missing, f"the README's walkthroughs need {', '.join(missing)} on PATH"
    everything = walkthroughs(README.read_text())
    for w in everything:
        if w.skip is not None:
            print(f"walkthrough {w.name} is not run here: {w.skip}")
    runnable = [w for w in everything if w.skip is None]
    stack.start()
    env = {**Stack.env(), "IDP_API": stack.api, "IDP_DEMO_REPO": str(tmp_path / "demo")}
    ran: list[tuple[str, Ran]] = []
    for phase, order in (("alone", runnable[::-1]), ("in order", runnable)):
        for walkthrough in order:
            cwd = tmp_path / "shells" / f"{walkthrough.name}-{len(ran)}"
            cwd.mkdir(parents=True)
            result = run_walkthrough(walkthrough, env, cwd)
            ran.append((phase, result))
            print(f"walkthrough {result.name} ({phase}): {result.seconds:.1f} s")
            assert result.returncode == 0, (
                f"walkthrough {result.name} ({phase}) exited {result.returncode}:\n"
                f"{result.output}\n--- idp dev (last lines):\n{stack.output[-4000:]}"
            )
    for phase, result in ran:  # what the README's prose says happens along the way
        for expected in said(result.name, env["PATH"]):
            assert expected in result.output, (result.name, phase, expected, result.output)
    assert_what_failed_is_found(stack)


FAILED_QUERY = re.compile(r"^\.venv/bin/temporal workflow list --query '(?P<query>[^']+)'$", re.M)


def assert_what_failed_is_found(stack: Stack) -> None:
    """The README's "Find what failed" query, as written, with the real CLI: it lists the failed
    pipeline run (completed: the user's test failed) and the failed provisioning run (Failed:
    the platform had no Pulumi CLI)."""
    section = README.read_text().split("## Find what failed", 1)[1].split("\n## ", 1)[0]
    match = FAILED_QUERY.search(section)
    assert match, "the README's 'Find what failed' section has no temporal workflow list command"
    wanted = {
        ("PipelineRunWorkflow", "WORKFLOW_EXECUTION_STATUS_COMPLETED"),
        ("ProvisionWorkflow", "WORKFLOW_EXECUTION_STATUS_FAILED"),
    }
    deadline = time.monotonic() + 10  # visibility follows the close within moments
    while True:
        listed = subprocess.run(
            [
                *(str(find_temporal_cli()), "workflow", "list", "--output", "json"),
                *("--address", f"127.0.0.1:{stack.grpc_port}", "--query", match["query"]),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        found = {(e["type"]["name"], e["status"]) for e in json.loads(listed.stdout or "[]")}
        if wanted <= found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert wanted <= found, (match["query"], found)
