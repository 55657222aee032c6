"""docs/security.md shows the permission matrix the code enforces."""

from core.security.permissions import matrix_markdown
from core.settings import PROJECT_ROOT


def test_security_doc_has_the_current_permission_matrix() -> None:
    doc = (PROJECT_ROOT / "docs" / "security.md").read_text()
    assert matrix_markdown() in doc, (
        "regenerate the matrix: core.security.permissions.matrix_markdown()"
    )
