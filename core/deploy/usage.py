"""What a local deployment uses now: memory and CPU time of its process group, read from
/proc (Linux). Kubernetes usage is the cluster's to report (metrics-server, the quota's
`status.used`), so it is not read here."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class ProcessUsage(BaseModel):
    alive: bool
    processes: int = 0
    rss_bytes: int = 0
    cpu_seconds: float = 0.0


def _stat(pid_dir: Path) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    try:
        text = (pid_dir / "stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def group_usage(pgid: int) -> ProcessUsage:
    """The sum over the live processes of process group `pgid` (a deployment's group)."""
    usage = ProcessUsage(alive=False)
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        fields = _stat(pid_dir)
        # fields: state, ppid, pgrp, ...; utime and stime are fields 14 and 15 of the line
        if fields is None or int(fields[2]) != pgid or fields[0] in ("Z", "X"):
            continue
        usage.alive = True
        usage.processes += 1
        usage.rss_bytes += int(fields[21]) * _PAGE
        usage.cpu_seconds += (int(fields[11]) + int(fields[12])) / _TICKS
    usage.cpu_seconds = round(usage.cpu_seconds, 2)
    return usage
