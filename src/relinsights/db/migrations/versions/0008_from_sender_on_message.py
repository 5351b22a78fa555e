"""from and sender on the message row, not as participant rows

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 23:45:00.000000

The message row already held the canonical from and sender addresses, and each message also stored them
again as two of its six participant rows. Those two rows were a third of a first sync's participant
inserts (scripts/bench_sync.py), so from and sender now live on the message only, with their raw form
(None when it equals the canonical one) and display name; message_participant keeps to, cc and bcc.

Upgrade moves each message's first "from" and "sender" participant row into the new columns (the
canonical address too, where the message had none) and deletes those rows; downgrade puts them back.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _first(role: str, value: str) -> str:
    return (
        f"(SELECT {value} FROM message_participant p WHERE p.message_id = message.id AND p.role = '{role}' "
        "ORDER BY p.id LIMIT 1)"
    )


_COLUMNS = (("from_raw_address", 320), ("from_name", 256), ("sender_raw_address", 320), ("sender_name", 256))


def upgrade() -> None:
    # Plain ALTER TABLE on both databases: a batch (copy) of `message` on SQLite would drop the old table,
    # and its foreign keys would cascade the drop onto every participant row.
    for name, length in _COLUMNS:
        op.add_column("message", sa.Column(name, sqlmodel.sql.sqltypes.AutoString(length=length), nullable=True))
    raw = "CASE WHEN p.raw_address = p.address THEN NULL ELSE p.raw_address END"
    name_sql = "NULLIF(p.name, '')"
    for role in ("from", "sender"):
        op.execute(
            f"UPDATE message SET {role}_address = COALESCE({role}_address, {_first(role, 'p.address')}), "
            f"{role}_raw_address = {_first(role, raw)}, "
            f"{role}_name = {_first(role, name_sql)} "
            "WHERE EXISTS (SELECT 1 FROM message_participant p "
            f"WHERE p.message_id = message.id AND p.role = '{role}')"
        )
    op.execute("DELETE FROM message_participant WHERE role IN ('from', 'sender')")


def downgrade() -> None:
    for role in ("from", "sender"):
        op.execute(
            "INSERT INTO message_participant (message_id, role, address, raw_address, name) "
            f"SELECT id, '{role}', {role}_address, COALESCE({role}_raw_address, {role}_address), {role}_name "
            f"FROM message WHERE {role}_address IS NOT NULL ORDER BY id"
        )
    for name, _ in reversed(_COLUMNS):
        op.execute(f"ALTER TABLE message DROP COLUMN {name}")  # SQLite >= 3.35, without copying the table
