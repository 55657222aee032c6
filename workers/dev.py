"""`idp dev`: the whole platform on one machine, on embedded defaults.

Order: validate everything and migrate (nothing is started if that fails), then the Temporal
dev server (history persisted in `<data dir>/temporal.db`, its output in
`<data dir>/temporal.log`) and its UI behind the front in workers/temporal_ui.py, unless
TEMPORAL_ADDRESS names a cluster, then a worker on every task queue, then the API. Each child
runs in its own process group and is told to die with this process; Ctrl-C (or SIGTERM) stops
them all.

Every address printed uses 127.0.0.1: the codec session cookie is set for the host of the
sign-in page, and a browser sends it to the codec endpoints only from a page of the same site.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from core.db import migrate
from core.errors import ConfigError
from core.security.encryption import KeyRing, install_keyring
from core.settings import Settings
from core.temporal import search_attributes
from core.temporal.client import connect, find_temporal_cli
from core.topology import Topology
from workers import temporal_ui
from workers.registry import check_topology

STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
_PR_SET_PDEATHSIG = 1
CODEC_PATH = "/api/temporal/codec"  # api/routers/temporal_codec.py
_ANY_OR_LOOPBACK = {"", "0.0.0.0", "::", "localhost", "127.0.0.1", "::1"}


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if `idp dev` itself dies (even by SIGKILL)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def free_local_port() -> int:
    """A port nothing listens on now, on 127.0.0.1 (for a server only this stack talks to)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def browser_host(bind_host: str) -> str:
    """The host a browser on this machine uses for a server bound to `bind_host`."""
    return "127.0.0.1" if bind_host in _ANY_OR_LOOPBACK else bind_host


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path | None = None  # where its output goes, when not to the terminal

    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_message(self) -> str:
        message = f"{self.name} exited with status {self.process.returncode}"
        if self.log is None:
            return message
        with contextlib.suppress(OSError):
            tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
            message += "".join(f"\n  | {line}" for line in tail)
        return f"{message}\n  (its output: {self.log})"

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)


@dataclass
class DevStack:
    settings: Settings
    topology: Topology
    child_args: list[str]
    children: list[Child] = field(default_factory=list)
    _stopping: bool = False

    # -- checks before anything starts ------------------------------------------------
    def preflight(self) -> Path | None:
        check_topology(self.topology)
        temporal_cli = None if self.settings.temporal_address else find_temporal_cli(self.settings)
        ports = [("API_PORT", self.settings.api_host, self.settings.api_port)]
        if temporal_cli:
            ports += [
                ("TEMPORAL_DEV_PORT", "127.0.0.1", self.settings.temporal_dev_port),
                ("TEMPORAL_UI_PORT", "127.0.0.1", self.settings.temporal_ui_port),
            ]
        for name, host, port in ports:
            if port_in_use(host, port):
                other = port + 1 if port < 65535 else port - 1
                raise ConfigError(  # settings come from the environment: works under make too
                    f"port {port} ({name}) is already in use; stop what holds it "
                    f"(another `idp dev`?) or choose another: `{name}={other} make run`, "
                    f"or `idp --set {name}={other} dev`"
                )
        return temporal_cli

    # -- process management -------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], log: Path | None = None) -> Child:
        """Start a child; with `log`, its stdout and stderr go to that file (truncated)."""
        with open(log, "wb") if log else contextlib.nullcontext() as out:
            process = subprocess.Popen(
                argv,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                stdout=out,
                stderr=subprocess.STDOUT if out else None,
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def _idp(self, *command: str) -> list[str]:
        return [sys.executable, "-m", "workers.cli", *self.child_args, *command]

    def _wait_for(self, what: str, ready: Callable[[], bool], child: Child | None) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._stopping:
                raise KeyboardInterrupt
            if child is not None and not child.alive():
                raise RuntimeError(child.exit_message())
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{what} did not become ready within {STARTUP_TIMEOUT:.0f}s")

    def stop(self) -> None:
        for child in reversed(self.children):  # API first, Temporal last
            child.signal_group(signal.SIGTERM)
            try:
                child.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                child.signal_group(signal.SIGKILL)
                child.process.wait()
            child.signal_group(signal.SIGKILL)  # anything the child left in its group
        self.children.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    # -- the stack ----------------------------------------------------------------------
    @property
    def api_url(self) -> str:
        return f"http://{browser_host(self.settings.api_host)}:{self.settings.api_port}"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.settings.temporal_ui_port}"

    @property
    def namespace(self) -> str:
        return self.settings.temporal_namespace or self.topology.namespace

    def start_temporal(self, cli: Path) -> None:
        """The dev server, its UI on an internal port, and the UI's front on TEMPORAL_UI_PORT.

        The dev server's output (its banner names `localhost`, where the codec session cookie
        is not sent) goes to `<data dir>/temporal.log`, not to the terminal."""
        data_dir = self.settings.resolved_data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        internal_ui_port = free_local_port()
        child = self._spawn(
            "temporal dev server",
            [
                str(cli),
                "server",
                "start-dev",
                "--ip",
                "127.0.0.1",
                "--port",
                str(self.settings.temporal_dev_port),
                "--ui-port",
                str(internal_ui_port),
                "--db-filename",
                str(data_dir / "temporal.db"),
                "--namespace",
                self.namespace,
                "--log-level",
                "error",
                *search_attributes.dev_server_flags(),
            ],
            log=data_dir / "temporal.log",
        )
        self._wait_for("Temporal", self._temporal_answers, child)
        front = self._spawn(
            "Temporal UI front",
            [
                sys.executable,
                "-m",
                "workers.temporal_ui",
                "--listen",
                f"127.0.0.1:{self.settings.temporal_ui_port}",
                "--upstream",
                f"http://127.0.0.1:{internal_ui_port}",
                "--codec-endpoint",
                f"{self.api_url}{CODEC_PATH}",
                "--sign-in",
                f"{self.api_url}{CODEC_PATH}/sign-in",
                "--namespace",
                self.namespace,
            ],
        )
        # Through the front: both the front and the UI server behind it answer.
        self._wait_for(
            "Temporal UI", lambda: http_ok(f"{self.ui_url}/") or not child.alive(), front
        )
        if not child.alive():
            raise RuntimeError(child.exit_message())

    def _temporal_answers(self) -> bool:
        if not port_in_use("127.0.0.1", self.settings.temporal_dev_port):
            return False

        async def probe() -> bool:
            client = await connect(self.settings, self.topology)
            return await client.service_client.check_health()

        try:
            return asyncio.run(probe())
        except Exception:
            return False

    def run(self) -> int:
        temporal_cli = self.preflight()
        if self.settings.encryption_key is not None:  # migrations that re-encrypt secrets
            install_keyring(KeyRing.from_settings(self.settings))
        migrate.upgrade(self.settings.effective_database_url)
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            if temporal_cli is not None:
                self.start_temporal(temporal_cli)
            worker = self._spawn("worker", self._idp("worker"))
            api = self._spawn("api", self._idp("api"))
            self._wait_for("API", lambda: http_ok(f"{self.api_url}/api/health"), api)
            # The addresses first (the API answers already), then the self-check's verdict.
            self._banner(self.api_url)
            self._selfcheck(worker)
            while not self._stopping:
                for child in self.children:
                    if not child.alive():
                        print(f"idp dev: {child.exit_message()}; stopping", file=sys.stderr)
                        return 1
                time.sleep(0.2)
            return 0
        except KeyboardInterrupt:
            return 0
        except RuntimeError as exc:
            print(f"idp dev: {exc}; stopping", file=sys.stderr)
            return 1
        finally:
            print("idp dev: stopping...", file=sys.stderr, flush=True)
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            print("idp dev: stopped", file=sys.stderr, flush=True)

    def _selfcheck(self, worker: Child) -> None:
        from workers.selfcheck import print_result, run_selfcheck

        if not worker.alive():
            raise RuntimeError("worker exited during start-up")
        result = asyncio.run(run_selfcheck(self.settings, self.topology))
        print_result(result)
        if not result.ok:
            raise RuntimeError("the start-up self-check failed")

    def _banner(self, base: str) -> None:
        data_dir = self.settings.resolved_data_dir
        sign_in = f"{base}{CODEC_PATH}/sign-in"
        lines = [
            "",
            "Internal Developer Platform is running (Ctrl-C stops everything)",
            f"  API            {base}",
            f"  OpenAPI docs   {base}/docs",
            f"  Readiness      {base}/api/health/ready",
        ]
        if self.settings.temporal_address:
            lines += [
                f"  Temporal       {self.settings.temporal_address} (external cluster)",
                f"  Codec sign-in  {sign_in} (to read payloads in the cluster's UI)",
            ]
        else:
            lines += [
                f"  Temporal UI    {self.ui_url}",
                f"  Codec sign-in  {sign_in} (once, to read payloads in the UI)",
                f"  Failed (1h)    {self.ui_url}{temporal_ui.FAILED_LAST_HOUR_PATH}",
                f"  Temporal gRPC  127.0.0.1:{self.settings.temporal_dev_port}",
                f"  History file   {data_dir / 'temporal.db'}",
                f"  Temporal log   {data_dir / 'temporal.log'}",
            ]
        lines.append(f"  Database       {self.settings.masked()['DATABASE_URL']}")
        print("\n".join(lines) + "\n", flush=True)
