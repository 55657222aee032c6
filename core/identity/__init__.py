"""Identity and access: users, organizations, teams, roles, tokens, API keys."""
