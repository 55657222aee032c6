"""Promotions: putting a service version into an environment, with the environment's policy
checks, approvals, deploy, verification and roll back."""
