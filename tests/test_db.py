"""Database: migrations on start are idempotent, SQLite runs in WAL mode with foreign keys, files are private."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text

import relinsights.db
from conftest import tenant_config
from relinsights.collector import collector_paused
from relinsights.db import make_engine, migrate
from relinsights.db.engine import schema_status
from relinsights.db.tenants import ensure_tenant


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


def test_migration_0008_moves_from_and_sender_rows_onto_the_message(engine: Engine) -> None:
    """A database written before 0008 (from and sender as participant rows) upgrades without losing anything,
    and downgrades back to the rows it had."""
    from alembic import command

    from relinsights.db.engine import _alembic_config

    command.downgrade(_alembic_config(engine), "0007")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO tenant (id, name, directory_id, verified_domains, status, created_at) "
                          "VALUES (1, 't', 'd', '[]', 'ok', '2026-01-01 00:00:00')"))
        conn.execute(text("INSERT INTO mailbox (id, tenant_pk, user_id, address, aliases, in_scope, status, error_count) "
                          "VALUES (1, 1, 'u', 'seller@contoso.com', '[]', true, 'ok', 0)"))
        for pk, from_, sender in ((1, "ann@fabrikam.com", "ann@fabrikam.com"), (2, "boss@contoso.com", None),
                                  (3, None, None)):
            conn.execute(
                text("INSERT INTO message (id, mailbox_pk, graph_id, from_address, sender_address, is_draft, seen_round)"
                     " VALUES (:id, 1, :g, :f, :s, false, 1)"),
                {"id": pk, "g": f"g{pk}", "f": from_, "s": sender},
            )
        parts = [
            (1, "from", "ann@fabrikam.com", "Ann@Fabrikam.COM", "Ann"),
            (1, "sender", "ann@fabrikam.com", "ann@fabrikam.com", ""),
            (1, "to", "seller@contoso.com", "seller@contoso.com", "Seller"),
            (1, "cc", "bob@contoso.com", "Bob@contoso.com", None),
            # A delegate's message whose sender column was never filled: the row fills it.
            (2, "from", "boss@contoso.com", "boss@contoso.com", "Boss"),
            (2, "sender", "assistant@contoso.com", "Assistant@contoso.com", "Assistant"),
            (2, "bcc", "ann@fabrikam.com", "ann@fabrikam.com", None),
            (3, "to", "seller@contoso.com", "seller@contoso.com", None),
        ]
        for mid, role, address, raw, name in parts:
            conn.execute(
                text("INSERT INTO message_participant (message_id, role, address, raw_address, name) "
                     "VALUES (:m, :r, :a, :raw, :n)"),
                {"m": mid, "r": role, "a": address, "raw": raw, "n": name},
            )

    migrate(engine)
    columns = "from_address, from_raw_address, from_name, sender_address, sender_raw_address, sender_name"
    with engine.connect() as conn:
        messages = conn.execute(text(f"SELECT id, {columns} FROM message ORDER BY id")).all()
        left = conn.execute(text("SELECT message_id, role, address FROM message_participant ORDER BY id")).all()
    assert [tuple(m) for m in messages] == [
        (1, "ann@fabrikam.com", "Ann@Fabrikam.COM", "Ann", "ann@fabrikam.com", None, None),
        (2, "boss@contoso.com", None, "Boss", "assistant@contoso.com", "Assistant@contoso.com", "Assistant"),
        (3, None, None, None, None, None, None),
    ]
    assert [tuple(p) for p in left] == [
        (1, "to", "seller@contoso.com"),
        (1, "cc", "bob@contoso.com"),
        (2, "bcc", "ann@fabrikam.com"),
        (3, "to", "seller@contoso.com"),
    ]

    command.downgrade(_alembic_config(engine), "0007")
    with engine.connect() as conn:
        back = conn.execute(
            text("SELECT message_id, role, address, raw_address, name FROM message_participant "
                 "WHERE role IN ('from', 'sender') ORDER BY message_id, role")
        ).all()
    assert [tuple(p) for p in back] == [
        (1, "from", "ann@fabrikam.com", "Ann@Fabrikam.COM", "Ann"),
        (1, "sender", "ann@fabrikam.com", "ann@fabrikam.com", None),
        (2, "from", "boss@contoso.com", "boss@contoso.com", "Boss"),
        (2, "sender", "assistant@contoso.com", "Assistant@contoso.com", "Assistant"),
    ]
    migrate(engine)


def test_migration_0009_compresses_kpi_payloads_with_lz4_on_postgresql(engine: Engine) -> None:
    """PostgreSQL (built with LZ4, as this machine's Debian build is) stores new payloads compressed with
    LZ4, not its default pglz (four times the server's time); a downgrade goes back to the default. SQLite has
    nothing to change."""
    from alembic import command

    from relinsights.db.engine import _alembic_config

    def method() -> str:
        with engine.connect() as conn:
            return str(
                conn.execute(
                    text(
                        "SELECT attcompression FROM pg_attribute"
                        " WHERE attrelid = 'kpi_snapshot'::regclass AND attname = 'payload'"
                    )
                ).scalar()
            )

    if engine.dialect.name != "postgresql":
        command.downgrade(_alembic_config(engine), "0008")
        migrate(engine)
        assert schema_status(engine)[0] == "0009"
        return
    assert method() == "l"
    payload = '{"daily": [' + ", ".join(f'{{"day": {d}, "emails": {d % 7}}}' for d in range(400)) + "]}"
    tenant_pk = ensure_tenant(engine, tenant_config()).id
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO kpi_snapshot (tenant_pk, entity, record_id, as_of, computed_at, accuracy, activities,"
                " fingerprint, payload) VALUES (:t, 'contact', 'c1', now(), now(), 'Complete', 0, 'f', :p)"
            ),
            {"t": tenant_pk, "p": payload},
        )
        stored = conn.execute(text("SELECT pg_column_compression(payload), payload FROM kpi_snapshot")).one()
    assert tuple(stored) == ("lz4", payload)
    command.downgrade(_alembic_config(engine), "0008")
    assert method() == ""  # (a NUL: the server's default method)
    migrate(engine)
    assert method() == "l"


def test_the_garbage_collector_is_paused_only_while_bulk_work_runs() -> None:
    """collector_paused (around apply_page and a KPI run) turns the cyclic collector off while the work
    runs and back on after, even when it fails; one already off is left off."""
    seen: list[bool] = []

    @collector_paused()
    def page(fail: bool) -> None:
        seen.append(gc.isenabled())
        if fail:
            raise RuntimeError("page failed")

    assert gc.isenabled()
    page(False)
    with pytest.raises(RuntimeError):
        page(True)
    assert seen == [False, False] and gc.isenabled()
    gc.disable()
    try:
        page(False)
        assert not gc.isenabled()
    finally:
        gc.enable()
