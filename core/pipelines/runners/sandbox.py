"""The default runner where bubblewrap works: each step's `sh -e -c` runs in a `bwrap` sandbox.

Everything else (process group, output, heartbeat, timeout, cancellation) is the LocalRunner's;
this runner only wraps the shell's argv (`LocalRunner.launch`). What the step sees:

- **Namespaces.** New user, pid, ipc, uts (and cgroup where possible) namespaces; the step is
  uid/gid `uid` (65534, `nobody`) inside, with no capabilities and no further user namespaces
  (`--disable-userns`). A new pid namespace: `/proc` shows the step's own processes only (not
  the worker's `/proc/<pid>/environ`), and is mounted read-only. `--die-with-parent`: the
  sandbox dies with the worker.
- **Files.** Read-only binds of the system directories (`/usr`, `/bin`, `/sbin`, `/lib*`) and
  of a short list of `/etc` entries tools need (certificates, passwd/group, name resolution,
  the dynamic linker's cache, alternatives, git's and Python's system config), never all of
  `/etc`. Fresh `/dev` and tmpfs `/tmp`. Writable: the run's workspace, at the same path as on
  the worker (so paths a build prints stay true), and the step's fresh HOME (TMPDIR inside
  it). Nothing else of the host: not the data directory (database, local secrets, other
  runs' workspaces, artifacts), not the project, not the worker's HOME.
- **Environment.** bwrap itself starts with the LocalRunner's clean environment (a fixed PATH
  of system directories, HOME, TMPDIR, LANG, then the step's variables), which the step
  inherits; values never appear on a command line.
- **Network.** None (`--unshare-net`: a loopback of its own) unless the step or pipeline sets
  `network: true`. Then, with `slirp4netns` installed, the step gets its own network namespace
  with user-mode NAT and `--disable-host-loopback`, so the worker's loopback ports (Temporal,
  the API, the database) stay unreachable; without slirp4netns the step shares the worker's
  network (a warning at start-up says so).
- **Exit status.** bwrap reports a step killed by a signal as exit code 128+N, as a shell does.

A worker running as root keeps the sandbox's processes at host uid 0 without capabilities
(bwrap maps the sandbox uid to the caller's); run workers as an unprivileged user, see
docs/pipelines.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Literal

from core.pipelines.runners.base import DEFAULT_STEP_UID, StepSpec
from core.pipelines.runners.local import DEFAULT_PATH, LocalRunner

INSTALL_BWRAP = "install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap)"
INSTALL_SLIRP = "install slirp4netns (Debian/Ubuntu: apt-get install slirp4netns)"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc a step sees (read-only, where present): never secrets such as /etc/shadow,
# /etc/ssl/private or the platform's own configuration.
ETC_ENTRIES = (
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/ssl/certs",
    "/etc/ssl/openssl.cnf",
    "/etc/pki/tls/certs",
    "/etc/pki/ca-trust",
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/gai.conf",
    "/etc/protocols",
    "/etc/services",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/shells",
    "/etc/mime.types",
    "/etc/gitconfig",
    "/etc/python3",
    "/etc/python3.11",
    "/etc/python3.12",
    "/etc/python3.13",
)
SLIRP_DNS = b"nameserver 10.0.2.3\n"  # slirp4netns's DNS forwarder
SETUP_TIMEOUT = 30.0
Network = Literal["none", "private", "host"]


class SandboxRunner(LocalRunner):
    """LocalRunner whose steps run under bubblewrap. `uid` is the step's uid inside."""

    def __init__(
        self,
        *,
        bwrap: str = "bwrap",
        uid: int = DEFAULT_STEP_UID,
        slirp4netns: str | None = "slirp4netns",
        **options: Any,
    ) -> None:
        options.setdefault("path", DEFAULT_PATH)  # the worker's PATH names host-only dirs
        super().__init__(**options)
        self.bwrap = shutil.which(bwrap) or bwrap
        self.uid = uid
        self.slirp4netns = shutil.which(slirp4netns) if slirp4netns else None

    # -- what the step sees --------------------------------------------------------------------
    def network(self, spec: StepSpec) -> Network:
        if not spec.network:
            return "none"
        return "private" if self.slirp4netns else "host"

    def sandbox_argv(
        self, spec: StepSpec, home: Path, network: Network, fds: dict[str, int] | None = None
    ) -> list[str]:
        """bwrap's argv around the step's shell. `fds`: `info`, `block` and `resolv` pipes
        for a private network (set up once the sandbox exists, before the step starts)."""
        ident = str(self.uid)
        argv = [
            self.bwrap,
            "--unshare-user",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--disable-userns",
            "--uid",
            ident,
            "--gid",
            ident,
            "--hostname",
            "idp-step",
            "--die-with-parent",
        ]
        if network != "host":
            argv.append("--unshare-net")
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        for path in ETC_ENTRIES:
            argv += ["--ro-bind-try", path, path]
        argv += ["--proc", "/proc", "--remount-ro", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        workdir = str(spec.workdir)
        argv += ["--bind", str(home), str(home), "--bind", workdir, workdir, "--chdir", workdir]
        if fds is not None:
            argv += ["--ro-bind-data", str(fds["resolv"]), "/etc/resolv.conf"]
            argv += ["--info-fd", str(fds["info"]), "--block-fd", str(fds["block"])]
        return [*argv, "--", *self.shell_argv(spec)]

    # -- starting ------------------------------------------------------------------------------
    async def launch(
        self, spec: StepSpec, home: Path, stack: contextlib.AsyncExitStack
    ) -> asyncio.subprocess.Process:
        network = self.network(spec)
        if network != "private":
            return await self.spawn(self.sandbox_argv(spec, home, network), spec, home)
        # The sandbox waits (--block-fd) until slirp4netns has set up its network namespace.
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        resolv_r, resolv_w = os.pipe()
        os.write(resolv_w, SLIRP_DNS)
        os.close(resolv_w)
        fds = {"info": info_w, "block": block_r, "resolv": resolv_r}
        try:
            argv = self.sandbox_argv(spec, home, network, fds)
            proc = await self.spawn(argv, spec, home, pass_fds=tuple(fds.values()))
        except BaseException:
            for fd in (info_r, block_w):
                os.close(fd)
            raise
        finally:
            for fd in fds.values():
                os.close(fd)
        try:
            info = await asyncio.wait_for(_read_to_end(info_r), SETUP_TIMEOUT)
            await self._private_network(_child_pid(info), stack)
        except BaseException as exc:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            os.close(block_w)
            if isinstance(exc, Exception):
                why = str(exc) or type(exc).__name__
                raise OSError(f"the step's network could not be set up: {why}") from exc
            raise
        os.write(block_w, b"1")
        os.close(block_w)
        return proc

    async def _private_network(self, pid: int, stack: contextlib.AsyncExitStack) -> None:
        """slirp4netns on the sandbox's network namespace: NAT to the outside, the worker's
        loopback unreachable. It ends when the step has ended (its exit fd is closed)."""
        assert self.slirp4netns is not None
        ready_r, ready_w = os.pipe()
        exit_r, exit_w = os.pipe()
        argv = [
            self.slirp4netns,
            "--configure",
            "--mtu=65520",
            "--disable-host-loopback",
            "--enable-seccomp",
            f"--ready-fd={ready_w}",
            f"--exit-fd={exit_r}",
        ]
        # slirp4netns enters a user namespace before the network namespace: by default the
        # target's, which is not the one owning the network namespace once bwrap has moved the
        # step into a nested one (to change its uid, and for --disable-userns). That move races
        # with this set-up, so name the owner, found by the kernel, always.
        owner = _owning_user_namespace(pid)
        stack.callback(os.close, owner)
        keep = [ready_w, exit_r, owner]
        argv.append(f"--userns-path=/proc/self/fd/{owner}")
        if os.geteuid() == 0:
            # Its own mount-namespace sandbox: it switches to id 0 in the step's user
            # namespace, which maps no 0 when the worker is not root ("setegid(0)").
            argv.append("--enable-sandbox")
        # its messages go to a file: a pipe nobody reads would stall it once full
        log = stack.enter_context(tempfile.TemporaryFile())  # noqa: SIM115 (closed by stack)
        try:
            helper = await asyncio.create_subprocess_exec(
                *argv,
                str(pid),
                "tap0",
                pass_fds=keep,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        except BaseException:
            for fd in (ready_r, exit_w):
                os.close(fd)
            raise
        finally:
            os.close(ready_w)
            os.close(exit_r)
        stack.push_async_callback(_stop_helper, helper, exit_w)
        ready = await asyncio.wait_for(_read_to_end(ready_r, 1), SETUP_TIMEOUT)
        if ready != b"1":
            with contextlib.suppress(ProcessLookupError):
                helper.kill()
            await helper.wait()
            log.seek(0)
            detail = log.read().decode(errors="replace").strip().splitlines()
            raise OSError(f"slirp4netns failed: {' / '.join(detail) if detail else 'no output'}")

    # -- can it run here -----------------------------------------------------------------------
    def check(self) -> str | None:
        """None when a sandbox starts here (`true` in it, the way steps run); else why not,
        in one line. Blocking: called once at worker start-up."""
        if not os.path.isabs(self.bwrap) or not os.access(self.bwrap, os.X_OK):
            return f"bwrap was not found on PATH; {INSTALL_BWRAP}"
        with tempfile.TemporaryDirectory(prefix="idp-sandbox-check-") as tmp:
            spec = StepSpec(step_id="check", command="true", workdir=Path(tmp), timeout=30)
            try:
                done = subprocess.run(
                    self.sandbox_argv(spec, Path(tmp), "none"),
                    env={"PATH": self.path},
                    cwd=tmp,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    timeout=30,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                return f"bwrap could not be run: {exc}"
        if done.returncode != 0:
            lines = done.stderr.decode(errors="replace").strip().splitlines()
            why = lines[-1] if lines else f"exit code {done.returncode}"
            return (
                f"bwrap cannot create a sandbox here ({why}); it needs unprivileged user "
                "namespaces (sysctl kernel.unprivileged_userns_clone=1 or user.max_user_namespaces)"
            )
        return None


_NS_GET_USERNS = 0xB701  # ioctl(2) on a namespace fd: the user namespace that owns it


def _owning_user_namespace(pid: int) -> int:
    """An fd of the user namespace owning `pid`'s network namespace (ioctl_ns(2))."""
    net = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        return fcntl.ioctl(net, _NS_GET_USERNS)
    finally:
        os.close(net)


async def _read_to_end(fd: int, limit: int = 65536) -> bytes:
    """Read a pipe until EOF (or `limit` bytes) without blocking the event loop; closes it."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit)
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        data = b""
        while len(data) < limit and (chunk := await reader.read(limit - len(data))):
            data += chunk
        return data
    finally:
        transport.close()


def _child_pid(info: bytes) -> int:
    """The sandbox's pid (on the worker) from bwrap's --info-fd JSON."""
    try:
        return int(json.loads(info)["child-pid"])
    except (ValueError, KeyError, TypeError):
        raise OSError("bwrap did not start the sandbox") from None


async def _stop_helper(helper: asyncio.subprocess.Process, exit_fd: int) -> None:
    os.close(exit_fd)  # slirp4netns exits when this closes
    try:
        await asyncio.wait_for(helper.wait(), 5)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            helper.kill()
        await helper.wait()
