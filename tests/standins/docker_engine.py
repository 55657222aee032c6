"""A stand-in Docker Engine: the Engine HTTP API (the subset the docker step runner uses) on a
Unix socket, with "containers" that are local subprocesses, so their output and exit codes are
real.

    with DockerEngineStandin(images={"alpine:3.20"}, pullable={"busybox:1.36"}) as engine:
        runner = DockerRunner(base_url=engine.base_url)   # unix:///tmp/.../docker.sock
        ...
        engine.created[-1].env, engine.removed, engine.pulls

Endpoints (with or without the `/v1.xx` prefix): `GET|HEAD /_ping`, `GET /version` (API
1.45), `GET /images/{name}/json`, `POST /images/create?fromImage=&tag=` (a JSON progress
stream; an image not in `pullable` is a 404 like a registry's "pull access denied"; one in
`pull_errors` fails inside the stream), `GET /containers/json?all=&filters=` (label filters),
`POST /containers/create`, `GET /containers/{id}/json`, `POST /containers/{id}/start`,
`GET /containers/{id}/logs?follow=&stdout=&stderr=` (the multiplexed stream: frames of an
8-byte header [stream 1|2, 0, 0, 0, uint32 big-endian size] and the payload, one frame per
chunk of a chunked response, replayed from the start and followed while the container runs),
`POST /containers/{id}/wait`, `/stop?t=`, `/kill?signal=`, `DELETE /containers/{id}?force=`.
Errors are `{"message": ...}` with the engine's status codes (404, 409, 400, 304).

The emulation, and its limits:
- A container's process is `Entrypoint + Cmd`, resolved like the engine does against the
  image's (an Entrypoint given at create time drops the image's Cmd), run with
  `start_new_session=True` in its own process group.
- Its environment is the image's `Env` (a `PATH`), `HOSTNAME`, then the requested `Env`:
  nothing of the test process leaks in, as in a real container.
- Bind mounts (`HostConfig.Mounts` of type bind and legacy `HostConfig.Binds`) map container
  paths to host paths: the working directory, when it lies in a mount, is the mounted host
  directory (otherwise a scratch directory of the container). There is no root filesystem
  and no path translation inside the command: `pwd` prints the host path. A `bind` Mount
  whose source does not exist is refused at create time (400), as the engine does; a missing
  `Binds` source is created, as the engine does.
- `User` and `NetworkMode` are recorded, not applied.
- When the main process exits, the rest of its process group is killed (a container's PID
  namespace ends with its PID 1). `stop` sends SIGTERM to the group and SIGKILL after `t`
  seconds; `kill` sends the signal; `DELETE ?force=1` kills. A process killed by signal N
  exits with 128+N, the engine's convention.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.standins import Running, StandinRequestHandler

API_VERSION = "1.45"
ENGINE_VERSION = "26.1.4-standin"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_VERSIONED = re.compile(r"^/v\d+\.\d+(/.*)$")


@dataclass(frozen=True)
class StandinImage:
    """An image the stand-in has or can pull: only its config matters here."""

    name: str
    env: tuple[str, ...] = (f"PATH={DEFAULT_PATH}",)
    entrypoint: tuple[str, ...] | None = None
    cmd: tuple[str, ...] | None = ("/bin/sh",)

    @property
    def id(self) -> str:
        return "sha256:" + hashlib.sha256(self.name.encode()).hexdigest()

    def inspect(self) -> dict[str, Any]:
        return {
            "Id": self.id,
            "RepoTags": [self.name],
            "RepoDigests": [],
            "Created": "2024-06-01T00:00:00Z",
            "Os": "linux",
            "Architecture": "amd64",
            "Size": 7_800_000,
            "Config": {
                "Env": list(self.env),
                "Entrypoint": list(self.entrypoint) if self.entrypoint is not None else None,
                "Cmd": list(self.cmd) if self.cmd is not None else None,
                "WorkingDir": "",
                "Labels": None,
            },
        }


@dataclass(frozen=True)
class BindMount:
    source: str  # host path
    target: str  # path in the container
    read_only: bool


@dataclass
class EmulatedContainer:
    """A container as created (what the client asked for) and as it runs."""

    id: str
    name: str
    image: str
    entrypoint: list[str] | None  # as requested
    cmd: list[str] | None  # as requested
    argv: list[str]  # what runs: resolved against the image like the engine does
    env: list[str]  # as requested (Config.Env), "KEY=value"
    labels: dict[str, str]
    working_dir: str
    user: str
    network_mode: str | None
    binds: list[BindMount]
    config: dict[str, Any]  # the create request's body, as sent
    image_env: list[str] = field(default_factory=list)
    status: str = "created"  # created, running, exited
    pid: int | None = None
    exit_code: int | None = None
    started_at: float | None = None
    finished_at: float | None = None
    removed: bool = False
    stops: list[int] = field(default_factory=list)  # the `t` of each stop request
    kills: list[str] = field(default_factory=list)  # the signal of each kill request
    frames: list[tuple[int, bytes]] = field(default_factory=list)  # (stream 1|2, payload)
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def env_dict(self) -> dict[str, str]:
        return {key: value for key, _, value in (item.partition("=") for item in self.env)}

    @property
    def running(self) -> bool:
        return self.status == "running"

    def output(self, stream: int = 1) -> bytes:
        return b"".join(data for kind, data in self.frames if kind == stream)


class _UnixHTTPServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    owner: Any = None

    def __init__(self, path: str, handler: type[StandinRequestHandler]) -> None:
        super().__init__(path, handler)
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _normalize(reference: str) -> str:
    """`alpine` → `alpine:latest`; `docker.io/library/alpine:3.20` → `alpine:3.20`."""
    name = reference
    for prefix in ("docker.io/", "index.docker.io/"):
        name = name.removeprefix(prefix)
    name = name.removeprefix("library/")
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        name += ":latest"
    return name


def _as_images(images: Iterable[str | StandinImage]) -> dict[str, StandinImage]:
    found: dict[str, StandinImage] = {}
    for image in images:
        if isinstance(image, str):
            image = StandinImage(_normalize(image))
        else:
            image = StandinImage(_normalize(image.name), image.env, image.entrypoint, image.cmd)
        found[image.name] = image
    return found


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _signal_number(name: str | None) -> int:
    if not name:
        return int(signal.SIGKILL)
    if name.isdigit():
        return int(name)
    name = name.upper()
    return int(signal.Signals[name if name.startswith("SIG") else f"SIG{name}"])


class DockerEngineStandin(Running):
    """A Docker Engine API server on a Unix socket in a fresh temporary directory."""

    def __init__(
        self,
        *,
        images: Iterable[str | StandinImage] = ("alpine:3.20",),
        pullable: Iterable[str | StandinImage] = (),
        pull_errors: Mapping[str, str] | None = None,
    ) -> None:
        self._cond = threading.Condition()
        self.images = _as_images(images)  # present on the engine
        self.pullable = _as_images(pullable)  # in the "registry"
        self.pull_errors = {_normalize(k): v for k, v in (pull_errors or {}).items()}
        self.pulls: list[str] = []  # every pull asked for (normalized), pulled or not
        self.created: list[EmulatedContainer] = []  # every container ever created
        self.removed: list[str] = []  # ids, in removal order
        self.requests: list[tuple[str, str]] = []  # (method, path without version and query)
        self._containers: dict[str, EmulatedContainer] = {}
        self._dir: Path | None = None
        self._server: _UnixHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def socket_path(self) -> Path:
        assert self._dir is not None, "the stand-in is not running"
        return self._dir / "docker.sock"

    @property
    def base_url(self) -> str:
        """What to give the docker SDK as base_url (or DOCKER_HOST)."""
        return f"unix://{self.socket_path}"

    def start(self) -> None:
        if self._server is not None:
            return
        self._dir = Path(tempfile.mkdtemp(prefix="idp-dockerd-"))
        server = _UnixHTTPServer(str(self.socket_path), _EngineHandler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="DockerEngineStandin",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            containers = list(self._containers.values())
        for container in containers:
            self._signal(container, signal.SIGKILL)
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.drop_connections()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        with self._cond:
            self._cond.notify_all()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    # -- what tests look at ------------------------------------------------------------------
    def container(self, container_id: str) -> EmulatedContainer:
        """A container ever created, by id or id prefix (removed ones included)."""
        with self._cond:
            for container in self.created:
                if container.id.startswith(container_id):
                    return container
        raise KeyError(container_id)

    @property
    def live(self) -> list[EmulatedContainer]:
        """Containers not removed."""
        with self._cond:
            return list(self._containers.values())

    def wait_for(self, predicate: Any, timeout: float = 10) -> bool:
        """Wait until `predicate()` (called under the stand-in's lock) is true."""
        with self._cond:
            return bool(self._cond.wait_for(predicate, timeout))

    # -- images ------------------------------------------------------------------------------
    def _image(self, reference: str) -> StandinImage:
        name = _normalize(reference)
        with self._cond:
            image = self.images.get(name)
            if image is None:
                image = next((i for i in self.images.values() if i.id == reference), None)
        if image is None:
            raise _Refused(404, f"No such image: {name}")
        return image

    def _pull(self, from_image: str, tag: str | None) -> tuple[str, StandinImage | None, str]:
        """(normalized reference, the image or None, the error to stream)."""
        if not from_image:
            raise _Refused(
                400, "invalid reference format: repository name must have at least one component"
            )
        joiner = "@" if tag and tag.startswith("sha256:") else ":"
        reference = _normalize(f"{from_image}{joiner}{tag}" if tag else from_image)
        with self._cond:
            self.pulls.append(reference)
            if reference in self.pull_errors:
                return reference, None, self.pull_errors[reference]
            image = self.pullable.get(reference)
        if image is None:
            repository = reference.rsplit(":", 1)[0].split("@")[0]
            raise _Refused(
                404,
                f"pull access denied for {repository}, repository does not exist or may "
                "require 'docker login': denied: requested access to the resource is denied",
            )
        with self._cond:
            self.images[reference] = image
        return reference, image, ""

    # -- containers --------------------------------------------------------------------------
    def _get(self, ref: str) -> EmulatedContainer:
        with self._cond:
            found = self._containers.get(ref)
            if found is None:
                matches = [
                    c
                    for c in self._containers.values()
                    if c.id.startswith(ref) or c.name == ref.removeprefix("/")
                ]
                found = matches[0] if len(matches) == 1 else None
        if found is None:
            raise _Refused(404, f"No such container: {ref}")
        return found

    def _create(self, body: dict[str, Any], name: str | None) -> EmulatedContainer:
        image = self._image(str(body.get("Image") or ""))
        host = body.get("HostConfig") or {}
        binds: list[BindMount] = []
        for mount in host.get("Mounts") or []:
            if mount.get("Type", "volume") != "bind":
                raise _Refused(400, f"the stand-in supports bind mounts only, not {mount}")
            source = str(mount.get("Source") or "")
            if not Path(source).is_dir():
                raise _Refused(
                    400,
                    'invalid mount config for type "bind": bind source path does not exist: '
                    f"{source}",
                )
            binds.append(BindMount(source, str(mount["Target"]), bool(mount.get("ReadOnly"))))
        for bind in host.get("Binds") or []:
            source, target, *mode = str(bind).split(":")
            Path(source).mkdir(parents=True, exist_ok=True)  # the engine creates it, too
            binds.append(BindMount(source, target, "ro" in (mode[0].split(",") if mode else [])))
        entrypoint = body.get("Entrypoint")
        cmd = body.get("Cmd")
        if isinstance(entrypoint, str):
            entrypoint = [entrypoint]
        if isinstance(cmd, str):
            cmd = [cmd]
        # the engine's merge: an Entrypoint given at create time drops the image's Cmd
        if entrypoint:
            argv = [*entrypoint, *(cmd or [])]
        else:
            run_cmd = cmd or list(image.cmd or ())
            run_entry = list(image.entrypoint or ()) if entrypoint is None else []
            argv = [*run_entry, *run_cmd]
        if not argv:
            raise _Refused(400, "no command specified")
        container_id = uuid.uuid4().hex + uuid.uuid4().hex
        container = EmulatedContainer(
            id=container_id,
            name=name or f"standin_{container_id[:8]}",
            image=image.name,
            entrypoint=entrypoint,
            cmd=cmd,
            argv=[str(a) for a in argv],
            env=[str(e) for e in body.get("Env") or []],
            labels=dict(body.get("Labels") or {}),
            working_dir=str(body.get("WorkingDir") or "/"),
            user=str(body.get("User") or ""),
            network_mode=host.get("NetworkMode"),
            binds=binds,
            config=body,
            image_env=list(image.env),
        )
        with self._cond:
            if any(c.name == container.name for c in self._containers.values()):
                raise _Refused(
                    409, f'Conflict. The container name "/{container.name}" is already in use'
                )
            self._containers[container.id] = container
            self.created.append(container)
            self._cond.notify_all()
        return container

    def _host_dir(self, container: EmulatedContainer) -> Path:
        """The host directory the container's working directory maps to."""
        workdir = container.working_dir.rstrip("/") or "/"
        for bind in sorted(container.binds, key=lambda b: len(b.target), reverse=True):
            target = bind.target.rstrip("/") or "/"
            if workdir == target or workdir.startswith(target + "/"):
                return Path(bind.source, workdir[len(target) :].lstrip("/"))
        assert self._dir is not None
        scratch = self._dir / "rootfs" / container.id[:12] / workdir.lstrip("/")
        scratch.mkdir(parents=True, exist_ok=True)
        return scratch

    def _start(self, container: EmulatedContainer) -> bool:
        """Start the process; False when it already runs (HTTP 304)."""
        with self._cond:
            if container.running:
                return False
        env: dict[str, str] = {}
        for item in [*container.image_env, f"HOSTNAME={container.id[:12]}", *container.env]:
            key, _, value = item.partition("=")
            env[key] = value
        cwd = self._host_dir(container)
        cwd.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.Popen(
                container.argv,
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise _Refused(
                400,
                "failed to create task for container: failed to create shim task: OCI runtime "
                f'create failed: exec: "{container.argv[0]}": {exc.strerror}',
            ) from None
        with self._cond:
            container._proc = proc
            container.pid = proc.pid
            container.status = "running"
            container.exit_code = None
            container.started_at = time.time()
            container.finished_at = None
            self._cond.notify_all()
        pumps = [
            threading.Thread(target=self._pump, args=(container, proc.stdout, 1), daemon=True),
            threading.Thread(target=self._pump, args=(container, proc.stderr, 2), daemon=True),
        ]
        for pump in pumps:
            pump.start()
        threading.Thread(target=self._monitor, args=(container, proc, pumps), daemon=True).start()
        return True

    def _pump(self, container: EmulatedContainer, pipe: Any, stream: int) -> None:
        fd = pipe.fileno()
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                with self._cond:
                    container.frames.append((stream, data))
                    self._cond.notify_all()
        finally:
            pipe.close()

    def _monitor(
        self,
        container: EmulatedContainer,
        proc: subprocess.Popen[bytes],
        pumps: list[threading.Thread],
    ) -> None:
        code = proc.wait()
        # the container's PID 1 is gone: so is everything else in its PID namespace
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pump in pumps:
            pump.join(timeout=5)
        with self._cond:
            container.status = "exited"
            container.exit_code = code if code >= 0 else 128 - code
            container.finished_at = time.time()
            self._cond.notify_all()

    def _signal(self, container: EmulatedContainer, sig: int) -> None:
        with self._cond:
            pid = container.pid if container.running else None
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, sig)

    def _stop(self, container: EmulatedContainer, grace: int, sig: int) -> bool:
        """False when it was not running (HTTP 304)."""
        with self._cond:
            container.stops.append(grace)
            if not container.running:
                return False
        self._signal(container, sig)
        with self._cond:
            exited = self._cond.wait_for(lambda: not container.running, timeout=max(grace, 0))
        if not exited:
            self._signal(container, signal.SIGKILL)
        with self._cond:
            self._cond.wait_for(lambda: not container.running, timeout=10)
        return True

    def _kill(self, container: EmulatedContainer, sig_name: str | None) -> None:
        sig = _signal_number(sig_name)
        with self._cond:
            container.kills.append(signal.Signals(sig).name)
            if not container.running:
                raise _Refused(409, f"Container {container.id} is not running")
        self._signal(container, sig)
        if sig == signal.SIGKILL:
            with self._cond:
                self._cond.wait_for(lambda: not container.running, timeout=10)

    def _remove(self, container: EmulatedContainer, force: bool) -> None:
        with self._cond:
            running = container.running
        if running and not force:
            raise _Refused(
                409,
                f"You cannot remove a running container {container.id}. Stop the container "
                "before attempting removal or force remove",
            )
        if running:
            self._signal(container, signal.SIGKILL)
            with self._cond:
                self._cond.wait_for(lambda: not container.running, timeout=10)
        with self._cond:
            self._containers.pop(container.id, None)
            container.removed = True
            self.removed.append(container.id)
            self._cond.notify_all()

    def _wait(self, container: EmulatedContainer, condition: str) -> dict[str, Any]:
        with self._cond:
            if condition == "removed":
                self._cond.wait_for(lambda: container.removed)
            elif condition == "next-exit":
                before = container.finished_at
                self._cond.wait_for(
                    lambda: container.finished_at != before and not container.running
                )
            else:  # not-running
                self._cond.wait_for(lambda: not container.running)
            return {"StatusCode": container.exit_code or 0, "Error": None}

    def _frames(self, container: EmulatedContainer, follow: bool) -> Iterator[tuple[int, bytes]]:
        """The container's output from the start; while following, until it stops."""
        index = 0
        while True:
            with self._cond:
                if follow:
                    seen = index
                    self._cond.wait_for(
                        lambda: (
                            len(container.frames) > seen  # noqa: B023 (called right here)
                            or not container.running
                            or container.removed
                            or self._server is None
                        )
                    )
                pending = container.frames[index:]
                index += len(pending)
                ended = not follow or not container.running or container.removed
                ended = ended or self._server is None
            yield from pending
            if ended and not pending:
                return

    def _list(self, all_: bool, filters: dict[str, Any]) -> list[dict[str, Any]]:
        labels = filters.get("label") or []
        if isinstance(labels, dict):  # the old map form {"k=v": true}
            labels = list(labels)
        with self._cond:
            containers = list(self._containers.values())
        found = []
        for c in containers:
            if not all_ and not c.running:
                continue
            wanted = (str(label).partition("=") for label in labels)
            if not all(
                key in c.labels and (not eq or c.labels[key] == value) for key, eq, value in wanted
            ):
                continue
            found.append(
                {
                    "Id": c.id,
                    "Names": [f"/{c.name}"],
                    "Image": c.image,
                    "Command": " ".join(c.argv),
                    "Labels": c.labels,
                    "State": c.status,
                    "Status": c.status,
                }
            )
        return found

    def _inspect(self, c: EmulatedContainer) -> dict[str, Any]:
        with self._cond:
            return {
                "Id": c.id,
                "Name": f"/{c.name}",
                "Path": c.argv[0],
                "Args": c.argv[1:],
                "Image": self.images[c.image].id if c.image in self.images else c.image,
                "State": {
                    "Status": c.status,
                    "Running": c.running,
                    "Paused": False,
                    "Restarting": False,
                    "OOMKilled": False,
                    "Dead": False,
                    "Pid": c.pid if c.running else 0,
                    "ExitCode": c.exit_code or 0,
                    "Error": "",
                    "StartedAt": _timestamp(c.started_at),
                    "FinishedAt": _timestamp(c.finished_at),
                },
                "Config": {
                    "Image": c.image,
                    "Entrypoint": c.entrypoint,
                    "Cmd": c.cmd,
                    "Env": c.env,
                    "Labels": c.labels,
                    "WorkingDir": c.working_dir,
                    "User": c.user,
                    "Tty": False,
                },
                "HostConfig": c.config.get("HostConfig") or {},
                "Mounts": [
                    {
                        "Type": "bind",
                        "Source": b.source,
                        "Destination": b.target,
                        "RW": not b.read_only,
                    }
                    for b in c.binds
                ],
            }


def _timestamp(at: float | None) -> str:
    if at is None:
        return "0001-01-01T00:00:00Z"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1e9):09d}Z"


class _EngineHandler(StandinRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, like the engine
    query: dict[str, str]

    ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
        (method, re.compile(pattern), action)
        for method, pattern, action in (
            ("GET", r"^/_ping$", "ping"),
            ("HEAD", r"^/_ping$", "ping"),
            ("GET", r"^/version$", "version"),
            ("GET", r"^/images/(?P<name>.+)/json$", "image_inspect"),
            ("POST", r"^/images/create$", "image_pull"),
            ("GET", r"^/containers/json$", "container_list"),
            ("POST", r"^/containers/create$", "container_create"),
            ("GET", r"^/containers/(?P<id>[^/]+)/json$", "container_inspect"),
            ("POST", r"^/containers/(?P<id>[^/]+)/start$", "container_start"),
            ("GET", r"^/containers/(?P<id>[^/]+)/logs$", "container_logs"),
            ("POST", r"^/containers/(?P<id>[^/]+)/wait$", "container_wait"),
            ("POST", r"^/containers/(?P<id>[^/]+)/stop$", "container_stop"),
            ("POST", r"^/containers/(?P<id>[^/]+)/kill$", "container_kill"),
            ("DELETE", r"^/containers/(?P<id>[^/]+)$", "container_remove"),
        )
    )

    @property
    def engine(self) -> DockerEngineStandin:
        engine: DockerEngineStandin = self.server.owner
        return engine

    def end_headers(self) -> None:
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Server", f"Docker/{ENGINE_VERSION} (linux)")
        super().end_headers()

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        versioned = _VERSIONED.match(path)
        if versioned:
            path = versioned.group(1)
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        body = self.read_body()
        with self.engine._cond:
            self.engine.requests.append((self.command, path))
        for method, pattern, action in self.ROUTES:
            match = pattern.match(path)
            if match and method == self.command:
                try:
                    getattr(self, action)(body, **match.groupdict())
                except _Refused as refused:
                    self._error(refused.status, refused.message)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                return
        self._error(404, "page not found")

    def _error(self, status: int, message: str) -> None:
        if status == 304:
            self.send_response(304)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.answer_json(status, {"message": message})

    def _no_content(self) -> None:
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _begin_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    # -- system ------------------------------------------------------------------------------
    def ping(self, body: bytes) -> None:
        self.answer(200, b"OK", headers={"Docker-Experimental": "false", "OSType": "linux"})

    def version(self, body: bytes) -> None:
        self.answer_json(
            200,
            {
                "Platform": {"Name": "Docker Engine stand-in"},
                "Version": ENGINE_VERSION,
                "ApiVersion": API_VERSION,
                "MinAPIVersion": "1.24",
                "Os": "linux",
                "Arch": "amd64",
                "KernelVersion": os.uname().release,
                "GoVersion": "go1.22.0",
                "GitCommit": "standin",
            },
        )

    # -- images ------------------------------------------------------------------------------
    def image_inspect(self, body: bytes, name: str) -> None:
        self.answer_json(200, self.engine._image(name).inspect())

    def image_pull(self, body: bytes) -> None:
        reference, image, error = self.engine._pull(
            self.query.get("fromImage", ""), self.query.get("tag") or None
        )
        repository, _, tag = reference.rpartition(":")
        self._begin_stream("application/json")
        self._chunk(
            json.dumps({"status": f"Pulling from {repository}", "id": tag}).encode() + b"\r\n"
        )
        if image is None:
            self._chunk(
                json.dumps({"errorDetail": {"message": error}, "error": error}).encode() + b"\r\n"
            )
        else:
            layer = image.id[7:19]
            for status in ("Pulling fs layer", "Downloading", "Pull complete"):
                self._chunk(json.dumps({"status": status, "id": layer}).encode() + b"\r\n")
            self._chunk(json.dumps({"status": f"Digest: {image.id}"}).encode() + b"\r\n")
            done = f"Status: Downloaded newer image for {reference}"
            self._chunk(json.dumps({"status": done}).encode() + b"\r\n")
        self._end_stream()

    # -- containers --------------------------------------------------------------------------
    def container_list(self, body: bytes) -> None:
        filters = json.loads(self.query.get("filters") or "{}")
        self.answer_json(200, self.engine._list(_flag(self.query.get("all")), filters))

    def container_create(self, body: bytes) -> None:
        try:
            config = json.loads(body or b"{}")
        except ValueError:
            raise _Refused(400, "invalid JSON in the request body") from None
        container = self.engine._create(config, self.query.get("name") or None)
        self.answer_json(201, {"Id": container.id, "Warnings": []})

    def container_inspect(self, body: bytes, id: str) -> None:
        self.answer_json(200, self.engine._inspect(self.engine._get(id)))

    def container_start(self, body: bytes, id: str) -> None:
        if self.engine._start(self.engine._get(id)):
            self._no_content()
        else:
            self._error(304, "")

    def container_logs(self, body: bytes, id: str) -> None:
        container = self.engine._get(id)
        wanted = {1} if _flag(self.query.get("stdout")) else set()
        if _flag(self.query.get("stderr")):
            wanted.add(2)
        if not wanted:
            raise _Refused(400, "Bad parameters: you must choose at least one stream")
        self._begin_stream("application/vnd.docker.multiplexed-stream")
        for stream, data in self.engine._frames(container, _flag(self.query.get("follow"))):
            if stream in wanted:
                self._chunk(struct.pack(">BxxxL", stream, len(data)) + data)
        self._end_stream()

    def container_wait(self, body: bytes, id: str) -> None:
        container = self.engine._get(id)
        condition = self.query.get("condition") or "not-running"
        self.answer_json(200, self.engine._wait(container, condition))

    def container_stop(self, body: bytes, id: str) -> None:
        container = self.engine._get(id)
        grace = int(self.query.get("t") or 10)
        sig = _signal_number(self.query.get("signal") or "SIGTERM")
        if self.engine._stop(container, grace, sig):
            self._no_content()
        else:
            self._error(304, "")

    def container_kill(self, body: bytes, id: str) -> None:
        self.engine._kill(self.engine._get(id), self.query.get("signal"))
        self._no_content()

    def container_remove(self, body: bytes, id: str) -> None:
        self.engine._remove(self.engine._get(id), _flag(self.query.get("force")))
        self._no_content()
