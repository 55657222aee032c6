"""The catalog's pure rules: repository URL recognition and normalisation, semantic versions
and ranges, tags and documentation links, and the graph's Mermaid text."""

from __future__ import annotations

import uuid

import pytest

from core.catalog.dependencies import Edge, Graph, Node
from core.catalog.repositories import parse_repository_url
from core.catalog.services import check_docs, check_tags
from core.catalog.versions import check_constraint, check_sha, parse_version, satisfying
from core.errors import ValidationFailed


# -- repository URLs -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "kind", "normalised"),
    [
        ("https://github.com/acme/pay", "github", "https://github.com/acme/pay"),
        ("https://github.com/acme/pay.git", "github", "https://github.com/acme/pay"),
        ("https://github.com/acme/pay/", "github", "https://github.com/acme/pay"),
        ("  https://github.com/acme/pay  ", "github", "https://github.com/acme/pay"),
        ("http://www.github.com/acme/pay", "github", "https://github.com/acme/pay"),
        ("https://WWW.GitHub.com/Acme/Pay", "github", "https://github.com/Acme/Pay"),
        ("git@github.com:acme/pay.git", "github", "https://github.com/acme/pay"),
        ("ssh://git@github.com/acme/pay.git", "github", "https://github.com/acme/pay"),
        ("ssh://git@github.com:22/acme/pay.git", "github", "https://github.com/acme/pay"),
        ("git://github.com/acme/pay.git", "github", "https://github.com/acme/pay"),
        ("https://user:token@github.com/acme/pay", "github", "https://github.com/acme/pay"),
        ("https://github.com/acme/pay?tab=readme#usage", "github", "https://github.com/acme/pay"),
        ("https://github.com/acme/pay/tree/main", "github", "https://github.com/acme/pay"),
        (
            "https://github.com/acme/pay/blob/main/README.md",
            "github",
            "https://github.com/acme/pay",
        ),
        ("https://github.com/acme/pay.git/tree/main", "github", "https://github.com/acme/pay"),
        ("https://github.com/acme/pay/pull/42", "github", "https://github.com/acme/pay"),
        ("https://github.com/acme/pay/issues", "github", "https://github.com/acme/pay"),
        ("https://github.com/acme/pay/commit/9fceb02", "github", "https://github.com/acme/pay"),
        ("https://gitlab.com/grp/sub/pay", "gitlab", "https://gitlab.com/grp/sub/pay"),
        ("git@gitlab.com:grp/sub/pay.git", "gitlab", "https://gitlab.com/grp/sub/pay"),
        ("https://gitlab.com/grp/pay/-/tree/main", "gitlab", "https://gitlab.com/grp/pay"),
        (
            "https://gitlab.com/grp/sub/pay/-/merge_requests/3",
            "gitlab",
            "https://gitlab.com/grp/sub/pay",
        ),
        ("https://bitbucket.org/acme/pay/src/main/", "bitbucket", "https://bitbucket.org/acme/pay"),
        ("git@bitbucket.org:acme/pay.git", "bitbucket", "https://bitbucket.org/acme/pay"),
        (
            "https://bitbucket.org/acme/pay/pull-requests/7",
            "bitbucket",
            "https://bitbucket.org/acme/pay",
        ),
    ],
)
def test_repository_spellings_are_normalised(url: str, kind: str, normalised: str) -> None:
    repo = parse_repository_url(url)
    assert (repo.host_kind, repo.url) == (kind, normalised)
    assert repo.key == normalised.removeprefix("https://").lower()


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://example.com/acme/pay", "not a known Git host"),
        ("git@example.com:acme/pay.git", "not a known Git host"),
        ("https://github.com.evil.example/acme/pay", "not a known Git host"),
        ("github.com/acme/pay", "is not a repository URL"),
        ("ftp://github.com/acme/pay", "is not a repository URL"),
        ("not a url", "is not a repository URL"),
        ("", "is not a repository URL"),
        ("https://[github.com/acme/pay", "is not a repository URL"),
        ("https://github.com", "must be owner/name"),
        ("https://github.com/acme", "must be owner/name"),
        ("https://github.com/acme/pay/extra", "must be owner/name"),
        ("https://github.com/acme//pay", "must be owner/name"),
        ("https://gitlab.com/grp", "must be group/…/name"),
        ("https://github.com/acme/pa y", "characters"),
        ("https://github.com/acme/..", "characters"),
        ("https://gitlab.com/grp/./pay", "characters"),
        ("https://gitlab.com/grp//pay", "characters"),
    ],
)
def test_other_repository_urls_are_refused_saying_why(url: str, why: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse_repository_url(url)
    assert why in caught.value.message and repr(url) in caught.value.message
    assert caught.value.details == [{"field": "repository_url", "message": caught.value.message}]


def test_self_hosted_hosts_come_from_git_hosts() -> None:
    hosts = {"Git.Example.com": "gitlab", "ghe.example.com": "github"}
    repo = parse_repository_url("ssh://git@git.example.com:2222/grp/sub/pay.git", hosts)
    assert (repo.host_kind, repo.url) == ("gitlab", "https://git.example.com/grp/sub/pay")
    assert parse_repository_url("git@ghe.example.com:acme/pay.git", hosts).host_kind == "github"
    with pytest.raises(ValidationFailed, match="GIT_HOSTS"):
        parse_repository_url("https://git.example.com/grp/pay")  # not configured here


# -- versions and ranges ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "stored"),
    [
        ("1.2.3", "1.2.3"),
        ("v1.2.3", "1.2.3"),
        (" 2.0.0-rc.1 ", "2.0.0-rc.1"),
        ("1.0.0+b7", "1.0.0+b7"),
    ],
)
def test_versions_are_semantic(value: str, stored: str) -> None:
    assert str(parse_version(value)) == stored


@pytest.mark.parametrize(
    "value", ["1.2", "1", "1.2.3.4", "01.2.3", "1.2.3-", "latest", "", "vv1.0.0"]
)
def test_other_versions_are_refused(value: str) -> None:
    with pytest.raises(ValidationFailed, match="not a semantic version") as caught:
        parse_version(value)
    assert caught.value.details[0]["field"] == "version"


@pytest.mark.parametrize(
    ("value", "stored"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("*", None),
        (" ^1.2.0 ", "^1.2.0"),
        ("~1.4", "~1.4"),
        (">=1.0.0 <2.0.0", ">=1.0.0 <2.0.0"),
        ("1.x || 2.x", "1.x || 2.x"),
        ("1.0.0 - 2.0.0", "1.0.0 - 2.0.0"),
    ],
)
def test_constraints_are_semver_ranges(value: str | None, stored: str | None) -> None:
    assert check_constraint(value) == stored


@pytest.mark.parametrize(
    "value", ["latest", "~>1.2", "^", ">=1.0.0 <", "abc", "1.0.0 - ^2", ". - 1", "1 - ."]
)
def test_malformed_constraints_are_refused(value: str) -> None:
    with pytest.raises(ValidationFailed, match="not a semantic version range"):
        check_constraint(value)


def test_satisfying_versions_are_highest_first() -> None:
    versions = ["1.2.0", "1.10.0", "2.0.0", "1.3.0-rc.1", "0.9.9"]
    assert satisfying(None, versions) == ["2.0.0", "1.10.0", "1.3.0-rc.1", "1.2.0", "0.9.9"]
    assert satisfying("^1.2.0", versions) == ["1.10.0", "1.2.0"]  # no pre-release by default
    assert satisfying(">=1.3.0-rc.0 <1.4.0", versions) == ["1.3.0-rc.1"]
    assert satisfying("^3.0.0", versions) == []


def test_git_shas() -> None:
    assert check_sha(None) is None and check_sha("") is None
    assert check_sha(" 9FCEB02 ") == "9fceb02"
    for bad in ("9fceb0", "xyz1234", "9" * 41):
        with pytest.raises(ValidationFailed, match="git commit SHA"):
            check_sha(bad)


# -- tags and docs ---------------------------------------------------------------------------
def test_tags_are_slugs_deduplicated() -> None:
    assert check_tags(["python", "pci", "python"]) == ["python", "pci"]
    for bad in (["Python"], ["with space"], [""], ["a" * 64]):
        with pytest.raises(ValidationFailed):
            check_tags(bad)
    with pytest.raises(ValidationFailed, match="at most 50"):
        check_tags([f"t{i}" for i in range(51)])


def test_docs_links_are_http_urls() -> None:
    assert check_docs(
        [{"url": " https://docs.example.com/x "}, {"title": "T", "url": "http://a.b"}]
    ) == [
        {"title": "https://docs.example.com/x", "url": "https://docs.example.com/x"},
        {"title": "T", "url": "http://a.b"},
    ]
    for bad in (
        "ftp://docs.example.com",
        "docs.example.com",
        "https://",
        "javascript:alert(1)",
        "https://[x/y",
    ):
        with pytest.raises(ValidationFailed) as caught:
            check_docs([{"url": "https://ok.example"}, {"url": bad}])
        assert caught.value.details[0]["field"] == "docs[1].url"


# -- Mermaid ---------------------------------------------------------------------------------
def _node(name: str, depth: int) -> Node:
    return Node(uuid.uuid4(), name, "component", "production", uuid.uuid4(), depth)


def test_mermaid_draws_nodes_edges_and_unsatisfied_constraints_dotted() -> None:
    root, ledger, db, web = (
        _node("pay", 0),
        _node("ledger", 1),
        _node("pay-db", 1),
        _node("web", -1),
    )
    graph = Graph(
        root=root.id,
        depth=1,
        nodes=[root, ledger, db, web],
        edges=[
            Edge(root.id, ledger.id, "runtime", ">=2.0.0 <3.0.0", True, ["2.1.0"]),
            Edge(root.id, db.id, "data", None),
            Edge(web.id, root.id, "runtime", "^9.0.0", False),
        ],
        problems=[],
    )
    assert graph.mermaid() == (
        "graph LR\n"
        '  n0["pay"]\n'
        '  n1["ledger"]\n'
        '  n2["pay-db"]\n'
        '  n3["web"]\n'
        '  n0 -->|"runtime >=2.0.0 <3.0.0"| n1\n'
        '  n0 -->|"data"| n2\n'
        '  n3 -.->|"runtime ^9.0.0"| n0\n'
        "  style n0 stroke-width:3px\n"
    )


def test_mermaid_of_a_lone_service() -> None:
    root = _node("alone", 0)
    text = Graph(root.id, 1, [root], [], []).mermaid()
    assert text == 'graph LR\n  n0["alone"]\n  style n0 stroke-width:3px\n'
