"""Infrastructure: cloud providers, the resource inventory, compliance, costs."""
