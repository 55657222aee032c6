"""One Pulumi program per cloud: `program(spec)` declares an environment stack's resources
(network, Kubernetes, PostgreSQL, object storage) and exports its outputs. Each module
imports only its own cloud's package; `infra.stacks.program_for` picks the module."""
