"""docs/configuration.md's settings tables are what the settings model says, and every setting
is documented there."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.settings import GROUPS, PROJECT_ROOT, Settings, env_name
from core.settings_doc import COMMAND, DOC, main, render, table


def test_configuration_doc_matches_the_settings_model() -> None:
    doc = DOC.read_text()
    assert render(doc) == doc, f"docs/configuration.md is out of date; run: {COMMAND}"


def test_every_setting_has_a_row_with_a_meaning() -> None:
    doc = DOC.read_text()
    for name, info in Settings.model_fields.items():
        assert info.description and len(info.description) > 10, f"{name} has no doc="
        assert f"| `{env_name(name)}` | `{name}` |" in doc, name
    assert "| `CORS_ORIGINS` | `cors_origins` | unset: the embedded Temporal UI" in doc


def test_secrets_are_marked_and_defaults_shown() -> None:
    rows = {
        m.group(1): (m.group(2), m.group(3))
        for group in GROUPS
        for m in re.finditer(r"^\| `(\w+)` \| `\w+` \| (.*?) \| (.*) \|$", table(group), re.M)
    }
    assert len(rows) == len(Settings.model_fields)
    assert rows["JWT_SECRET"][1].startswith("**secret**. ")
    assert rows["TEMPORAL_API_KEY"][1].startswith("**secret**. ")
    assert not rows["API_PORT"][1].startswith("**secret**")
    assert rows["API_PORT"][0] == "`8000`"
    assert rows["IDP_DATABASE_ECHO"][0] == "`false`"
    assert rows["TEMPORAL_NAMESPACE"][0] == "unset: `namespace` of `temporal.yaml`"
    assert str(PROJECT_ROOT) not in "".join(map(str, rows.values()))  # no machine's paths


def test_a_stale_doc_fails_the_check_and_write_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stale = DOC.read_text().replace("| `CORS_ORIGINS` |", "| `CORS_ORIGIN` |")
    copy = tmp_path / "configuration.md"
    copy.write_text(stale)
    assert main(["--check", "--doc", str(copy)]) == 1
    assert COMMAND in capsys.readouterr().err
    assert main(["--write", "--doc", str(copy)]) == 0
    assert copy.read_text() == DOC.read_text()
    assert main(["--check", "--doc", str(copy)]) == 0


def test_a_missing_table_is_an_error() -> None:
    doc = DOC.read_text()
    without = re.sub(r"<!-- settings:begin api .*?<!-- settings:end -->", "", doc, flags=re.S)
    with pytest.raises(ValueError, match=r"missing \['api'\]"):
        render(without)
