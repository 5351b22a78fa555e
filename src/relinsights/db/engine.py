"""Engines for SQLite (default, WAL) and PostgreSQL, and migrations run on start."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlmodel import Session

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str, pool_size: int = 5) -> Engine:
    """An engine for `url`; SQLite files get WAL, foreign keys and a generous busy timeout."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            # 64 MiB of page cache: index inserts of a large first sync stay in memory (the default is 2 MiB).
            cur.execute("PRAGMA cache_size=-65536")
            # Checkpoint the WAL every ~40 MiB, not every 4 MiB: with one commit per delta page, the default
            # made nearly every commit of a large first sync pay a checkpoint (scripts/bench_sync.py).
            cur.execute("PRAGMA wal_autocheckpoint=10000")
            cur.close()

        if parsed.database and parsed.database != ":memory:":
            _restrict(Path(parsed.database))
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = str(parsed.set(drivername="postgresql+psycopg"))
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _restrict(db_file: Path) -> None:
    """The database holds mail metadata: readable by the service user only."""
    for suffix in ("", "-wal", "-shm"):
        p = Path(str(db_file) + suffix)
        if not p.exists():
            p.touch(mode=0o600)
        os.chmod(p, 0o600)


def _alembic_config(engine: Engine) -> AlembicConfig:
    # Alembic (about 10 MiB with Mako) is imported where migrations run, not by every user of an engine:
    # the KPI computation's process never migrates.
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe for several daemons on PostgreSQL)."""
    from alembic import command

    command.upgrade(_alembic_config(engine), "head")


def schema_status(engine: Engine) -> tuple[str | None, str]:
    """(current revision, newest revision) for admin checks."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(_alembic_config(engine))
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    return current, script.get_current_head() or ""


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
