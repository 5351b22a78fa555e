"""drop the message participant address index

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 18:00:00.000000

Every participant row of a first sync paid a random insert into this index (six rows a message), and
with the per-page commits its scattered leaf pages were rewritten into the WAL at every page: it cost
about half of the whole insert (scripts/bench_sync.py). Only `relinsights purge --user` reads
participants by address, a rare admin command that scans instead.
"""

from __future__ import annotations

from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('message_participant', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_message_participant_address'))


def downgrade() -> None:
    with op.batch_alter_table('message_participant', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_message_participant_address'), ['address'], unique=False)
