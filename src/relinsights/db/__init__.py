"""Database: SQLModel tables, engines and sessions, Alembic migrations."""

from relinsights.db.engine import make_engine, migrate, session_scope

__all__ = ["make_engine", "migrate", "session_scope"]
