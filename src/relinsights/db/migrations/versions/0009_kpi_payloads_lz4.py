"""KPI snapshot payloads compressed with LZ4 on PostgreSQL

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 18:30:00.000000

A run stores every record's payload (about 5.5 KB of JSON each, 20,000 records in scripts/bench_compute.py)
while its KPIs are computed, and PostgreSQL compresses each on its way into TOAST. With its default method
(pglz) the server spent 1.1-1.2 s on 20,000 payloads; with LZ4, 0.29-0.31 s, for 36 MB stored against 33 MB.
Where the server was built without LZ4, or is older than 14 (no per-column compression), nothing changes.
SQLite does not compress.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _compressible(bind: sa.engine.Connection) -> bool:
    """Whether the server can compress a column with LZ4 (PostgreSQL 14 on, built with it)."""
    if bind.dialect.name != "postgresql":
        return False
    query = "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    return bind.execute(sa.text(query)).scalar() is True


def upgrade() -> None:
    if _compressible(op.get_bind()):
        op.execute("ALTER TABLE kpi_snapshot ALTER COLUMN payload SET COMPRESSION lz4")


def downgrade() -> None:
    if _compressible(op.get_bind()):
        op.execute("ALTER TABLE kpi_snapshot ALTER COLUMN payload SET COMPRESSION DEFAULT")
