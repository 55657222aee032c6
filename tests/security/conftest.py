"""The security tests use the integration tests' fixtures: the app on each backend, and the
promotion stack."""

from tests.integration.conftest import api, promotions

__all__ = ["api", "promotions"]
