"""Git host connections of organizations and the repositories bound to them (issue 15,
finding 2): who may receive a repository's webhooks, clone it and post its commit statuses."""
