"""Process entry points: the `idp` command, workers built from temporal.yaml, the dev stack."""
