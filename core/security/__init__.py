"""Security primitives: password hashing, tokens, permissions, encryption."""
