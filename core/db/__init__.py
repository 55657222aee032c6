"""Database engine, sessions, base model and migrations (SQLAlchemy 2 async, Alembic)."""
