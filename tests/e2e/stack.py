"""`idp dev` run as a child process on free ports, as the end-to-end tests drive it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from core.db import migrate
from core.local_secrets import with_local_secrets
from core.security.encryption import KeyRing, install_keyring
from core.settings import PROJECT_ROOT, Settings
from tests.helpers import free_port

START_TIMEOUT = 120


class Stack:
    def __init__(
        self,
        data_dir: Path,
        temporal_address: str | None = None,
        extra_settings: dict[str, str] | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.temporal_address = temporal_address
        self.extra_settings = extra_settings or {}
        self.api_port, self.grpc_port, self.ui_port = free_port(), free_port(), free_port()
        self.process: subprocess.Popen[str] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def ui(self) -> str:
        return f"http://127.0.0.1:{self.ui_port}"

    def settings(self) -> Settings:
        """What the stack's processes use, including its generated development secrets."""
        return with_local_secrets(
            Settings(
                data_dir=self.data_dir,
                temporal_dev_port=self.grpc_port,
                temporal_address=self.temporal_address,
            )
        )

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "workers.cli",
            "--set",
            f"IDP_DATA_DIR={self.data_dir}",
            "--set",
            f"API_PORT={self.api_port}",
            "--set",
            f"TEMPORAL_DEV_PORT={self.grpc_port}",
            "--set",
            f"TEMPORAL_UI_PORT={self.ui_port}",
            *(
                ["--set", f"TEMPORAL_ADDRESS={self.temporal_address}"]
                if self.temporal_address
                else []
            ),
            *(
                arg
                for name, value in self.extra_settings.items()
                for arg in ("--set", f"{name}={value}")
            ),
            "dev",
        ]

    @staticmethod
    def env() -> dict[str, str]:
        """The caller's environment without settings that would redirect the stack."""
        return {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("IDP_", "TEMPORAL_", "API_")) and k != "DATABASE_URL"
        }

    def start(self) -> None:
        """Start `idp dev` and return once its banner is printed and the API is ready."""
        self.process = subprocess.Popen(
            self.argv(),
            cwd=PROJECT_ROOT,
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._lines: list[str] = []
        stdout = self.process.stdout
        assert stdout is not None
        self._reader = threading.Thread(
            target=lambda: self._lines.extend(iter(stdout.readline, "")), daemon=True
        )
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._reader.join(5)
                raise AssertionError(f"idp dev exited:\n{self.output}")
            banner = any("Internal Developer Platform is running" in line for line in self._lines)
            try:
                ready = httpx.get(f"{self.api}/api/health/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                ready = False
            if banner and ready:
                return
            time.sleep(0.3)
        raise AssertionError(f"idp dev did not become ready:\n{self.output}")

    @property
    def output(self) -> str:
        return "".join(self._lines)

    def printed(self, label: str) -> str:
        """The address (first word) the start-up banner prints after `label`."""
        for line in self._lines:
            if line.startswith(f"  {label} "):
                return line[len(label) + 2 :].split()[0]
        raise AssertionError(f"idp dev printed no {label!r} line:\n{self.output}")

    def interrupt(self) -> str:
        """Ctrl-C: SIGINT to idp dev, as a terminal sends it; everything it printed."""
        assert self.process is not None
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
        self._reader.join(10)
        assert self.process.returncode == 0, self.output
        return self.output

    def leftovers(self) -> list[str]:
        """Processes whose command line names this stack's data dir or ports."""
        marks = (str(self.data_dir), f"--port {self.grpc_port}", f"127.0.0.1:{self.ui_port}")
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if any(mark in cmdline for mark in marks):
                found.append(f"{proc.name}: {cmdline}")
        return found


def start_worker(
    settings: Settings, queue: str, extra: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """An `idp worker` process serving `queue`, in its own process group (to SIGKILL it);
    `extra` settings are passed as `--set NAME=VALUE`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "TEMPORAL_"))}
    env.pop("DATABASE_URL", None)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "workers.cli",
            "--set",
            f"IDP_DATA_DIR={settings.data_dir}",
            "--set",
            f"DATABASE_URL={settings.database_url}",
            "--set",
            f"TEMPORAL_ADDRESS={settings.temporal_address}",
            *(arg for name, value in (extra or {}).items() for arg in ("--set", f"{name}={value}")),
            "worker",
            "--queue",
            queue,
        ],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def worker_settings(data_dir: Path, temporal_address: str) -> Settings:
    """Settings for `idp worker` processes on their own migrated SQLite database, with the
    key ring installed in this process too (so the test writes what the workers can read)."""
    settings = with_local_secrets(
        Settings(
            data_dir=data_dir,
            database_url=f"sqlite+aiosqlite:///{data_dir / 'idp.db'}",
            temporal_address=temporal_address,
        )
    )
    migrate.upgrade(settings.effective_database_url)
    install_keyring(KeyRing.from_settings(settings))
    return settings
