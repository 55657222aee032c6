"""docs/configuration.md's settings tables, generated from the settings model.

Each group of settings (`group=` on the field in core/settings.py) is one table, written between
`<!-- settings:begin GROUP ... -->` and `<!-- settings:end -->` in the doc; the prose around the
tables is the doc's own. `python -m core.settings_doc --write` rewrites the tables; `--check`
(and tests/unit/test_settings_doc.py) fails when the doc is not what the model says.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo

from core.settings import GROUPS, PROJECT_ROOT, Settings, default_doc, env_name

DOC = PROJECT_ROOT / "docs" / "configuration.md"
COMMAND = ".venv/bin/python -m core.settings_doc --write"
BEGIN = "<!-- settings:begin {group} (generated from core/settings.py: {command}) -->"
END = "<!-- settings:end -->"
_BLOCK = re.compile(r"<!-- settings:begin (\w+)[^>]*-->\n.*?<!-- settings:end -->", re.DOTALL)
HEADER = "| environment variable | config key | default | meaning |\n| --- | --- | --- | --- |"


def _extra(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def is_secret(info: FieldInfo) -> bool:
    return "SecretStr" in str(info.annotation)


def default_text(name: str) -> str:
    """The default column: `default_doc` when given, else the field's default value."""
    explained = default_doc(name)
    if explained:
        return explained
    value = Settings.model_fields[name].default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if value == ():
        return "empty"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def table(group: str) -> str:
    rows = [HEADER]
    for name, info in Settings.model_fields.items():
        if _extra(info).get("group") != group:
            continue
        meaning = str(info.description or "").replace("|", "\\|")
        if is_secret(info):
            meaning = f"**secret**. {meaning}"
        rows.append(f"| `{env_name(name)}` | `{name}` | {default_text(name)} | {meaning} |")
    return "\n".join(rows)


def render(doc: str) -> str:
    """`doc` with each settings table replaced by the one the model gives."""

    def replace(match: re.Match[str]) -> str:
        group = match.group(1)
        if group not in GROUPS:
            raise ValueError(f"docs/configuration.md: unknown settings group {group!r}")
        return f"{BEGIN.format(group=group, command=COMMAND)}\n{table(group)}\n{END}"

    found = [m.group(1) for m in _BLOCK.finditer(doc)]
    missing = [g for g in GROUPS if g not in found]
    twice = sorted({g for g in found if found.count(g) > 1})
    if missing or twice:
        raise ValueError(
            f"docs/configuration.md: settings tables missing {missing}, repeated {twice}; each "
            f"group needs one `{BEGIN.format(group='GROUP', command='...')}` ... `{END}` block"
        )
    return _BLOCK.sub(replace, doc)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--write", action="store_true", help="rewrite the tables in place")
    action.add_argument("--check", action="store_true", help="exit 1 if the doc is out of date")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    current = args.doc.read_text()
    wanted = render(current)
    if args.write:
        if wanted != current:
            args.doc.write_text(wanted)
        return 0
    if wanted != current:
        print(f"{args.doc} is out of date with core/settings.py; run: {COMMAND}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
