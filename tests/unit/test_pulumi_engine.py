"""The Pulumi boundary where the CLI is not installed: every call fails at once with a
message that says how to install it, and nothing is written."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.infrastructure.engine import AutomationEngine, PulumiMissing, StackRef, pulumi_cli


def program() -> None:
    raise AssertionError("the program must not run without the CLI")


@pytest.fixture
def no_pulumi(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    monkeypatch.delenv("PULUMI_HOME", raising=False)
    return tmp_path


async def test_missing_cli_fails_at_once_and_writes_nothing(no_pulumi: Path) -> None:
    backend = no_pulumi / "state"
    ref = StackRef("idp", "prod", f"file://{backend}", "passphrase")
    engine = AutomationEngine()
    for call in (engine.preview, engine.up, engine.destroy):
        with pytest.raises(PulumiMissing) as raised:
            await call(ref, program, print)
        assert "Pulumi CLI is not installed" in str(raised.value)
        assert "https://www.pulumi.com/docs/install/" in str(raised.value)
    assert not backend.exists()


def test_the_cli_is_found_on_path_or_under_pulumi_home(
    no_pulumi: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PulumiMissing):
        pulumi_cli()
    home = no_pulumi / "pulumi-home"
    (home / "bin").mkdir(parents=True)
    cli = home / "bin" / "pulumi"
    cli.write_text("#!/bin/sh\n")
    cli.chmod(0o755)
    monkeypatch.setenv("PULUMI_HOME", str(home))
    assert pulumi_cli() == str(cli)
