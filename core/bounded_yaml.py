"""YAML from users, parsed within bounds: no anchors or aliases, at most MAX_NODES nodes, at
most MAX_DEPTH levels of nesting.

Aliases are what makes a few hundred bytes of YAML expand into billions of nodes (the
"billion laughs"): PyYAML shares the aliased node, but everything that walks the result
(validation, line maps, JSON encoding) walks every reference. Pipeline definitions and
catalog files have no use for them, so an anchor (`&a`), an alias (`*a`) or a merge key
built on one is refused with its line, before anything is built. The caps bound what is left
(large flat documents, deep nesting that would exhaust Python's recursion).
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent, NodeEvent

MAX_NODES = 20_000
MAX_DEPTH = 64


class Refused(yaml.MarkedYAMLError):
    """Within the YAML syntax but outside what the platform accepts; carries the line."""


def _refused(problem: str, event: Any) -> Refused:
    return Refused(problem=problem, problem_mark=event.start_mark)


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._nodes = 0
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, AliasEvent) or (
            isinstance(event, NodeEvent) and event.anchor is not None
        ):
            raise _refused(
                "anchors and aliases (&name, *name, <<: *name) are not accepted; "
                "write the values out",
                event,
            )
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _refused(f"more than {MAX_NODES} values", event)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _refused(f"nested more than {MAX_DEPTH} levels deep", event)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def compose_and_load(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree of a single-document `text` (for line numbers) and its data, from one
    parse; raises yaml.YAMLError (Refused included)."""
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        return node, loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def load_all(text: str) -> list[Any]:
    """The data of every document of `text`, the caps counted over them all."""
    loader = _BoundedLoader(text)
    try:
        documents = []
        while loader.check_data():
            documents.append(loader.get_data())
        return documents
    finally:
        loader.dispose()
