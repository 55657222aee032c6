"""docs/getting-started.md shows what `idp dev` prints now: its banner and start-up self-check
(rendered by the code that prints them), and the schema revision the migrations end at."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from activities.selfcheck import DatabaseStatus
from core.db.migrate import head_revision
from core.settings import PROJECT_ROOT, Settings
from core.topology import Topology
from workers.dev import DevStack
from workers.selfcheck import print_result
from workflows.selfcheck import QueueStatus, SelfCheckResult

DOC = PROJECT_ROOT / "docs" / "getting-started.md"
HOME = Path("/home/you/idp")  # the doc's example checkout
WORKER = "41872@laptop"


def start_up_output(topology: Topology, capsys: pytest.CaptureFixture[str]) -> str:
    """What `make run` prints on stdout once ready, in the doc's example checkout."""
    capsys.readouterr()
    stack = DevStack(Settings(data_dir=HOME / ".data"), topology, [])
    stack._banner(stack.api_url)
    head = head_revision()
    print_result(
        SelfCheckResult(
            ok=True,
            checked_at=datetime.now(UTC),
            database=DatabaseStatus(
                ok=True, dialect="sqlite", revision=head, expected_revision=head
            ),
            queues=[
                QueueStatus(task_queue=queue, ok=True, worker=WORKER)
                for queue in topology.task_queues
            ],
        )
    )
    return capsys.readouterr().out.strip("\n")


def test_the_start_up_output_is_what_idp_dev_prints(
    topology: Topology, capsys: pytest.CaptureFixture[str]
) -> None:
    wanted = start_up_output(topology, capsys)
    assert f"```text\n{wanted}\n```" in DOC.read_text(), (
        "docs/getting-started.md, section 2: replace the start-up output with:\n" + wanted
    )


def test_revisions_in_the_doc_are_the_latest() -> None:
    doc = DOC.read_text()
    shown = re.findall(r"revision (\d{4})|expected (\d{4})", doc)
    assert shown, "the doc names no revision"
    assert {a or b for a, b in shown} == {head_revision()}
