"""The thin HTTP layer: validate, authorize, call a core service or Temporal, answer."""
