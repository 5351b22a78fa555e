"""Database: migrations on start are idempotent, SQLite runs in WAL mode with foreign keys, files are private."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, inspect, text

import relinsights.db
from relinsights.db import make_engine, migrate
from relinsights.db.engine import schema_status


def test_migrations_are_idempotent_and_complete(engine: Engine) -> None:
    migrate(engine)  # a second start must not fail or change anything
    current, head = schema_status(engine)
    versions = sorted((Path(relinsights.db.__file__).parent / "migrations" / "versions").glob("0*.py"))
    assert current == head == versions[-1].name.split("_")[0]
    tables = set(inspect(engine).get_table_names())
    assert {
        "tenant",
        "mailbox",
        "mail_folder",
        "sync_cursor",
        "message",
        "message_participant",
        "event",
        "event_attendee",
        "alembic_version",
        "writeback_row",
        "writeback_run",
    } <= tables
    indexes = {ix["name"] for ix in inspect(engine).get_indexes("message_participant")}
    # The KPI loader joins participants by message; nothing hot looks them up by address (migration 0007).
    assert "ix_message_participant_message" in indexes
    assert "ix_message_participant_address" not in indexes


def test_sqlite_is_wal_with_foreign_keys_and_private(tmp_path: Path) -> None:
    db = tmp_path / "state" / "r.db"
    eng = make_engine(f"sqlite:///{db}")
    migrate(eng)
    with eng.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
    assert oct(db.stat().st_mode & 0o777) == "0o600"
