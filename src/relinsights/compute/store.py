"""KPI snapshots and runs in the database: write one run's rows, find the previous ones, read them back.

A run writes one `kpi_snapshot` row per record with linked activity, dated by its `as_of`, in one
transaction with its `kpi_run` row: a run is there whole or not at all. Rerunning the same as-of
replaces that as-of's rows. Reused rows are copied forward in SQL (INSERT ... SELECT), so their payload
never travels through Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Engine, delete, func, insert, literal, select

from relinsights.analytics.spillfile import SpilledBytes
from relinsights.compute.dbcache import small_page_cache
from relinsights.db.models import KpiRun, KpiSnapshot, SimilarWonSnapshot, table_of

snapshot_t, run_t, similar_t = table_of(KpiSnapshot), table_of(KpiRun), table_of(SimilarWonSnapshot)
COPY_CHUNK = 500
SNAPSHOT_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    """One computed record, ready to insert."""

    entity: str
    record_id: str
    # The JSON payload: where it starts in `payloads`, its length. A run holds every record's until its one
    # write, in a file: as orjson made them they were a third of the job's memory, and zlib-packed in memory
    # packing and unpacking them took 1.6-1.9 s of CPU at 20,000 records (now 0.2 s).
    payload_at: tuple[int, int]
    fingerprint: str
    stable_until: datetime | None
    activities: int
    last_interaction_at: datetime | None
    health_score: int | None
    health_state: str | None
    health_trend: str | None
    payloads: SpilledBytes

    @property
    def payload(self) -> bytes:
        """The JSON payload."""
        return self.payloads.read(*self.payload_at)


@dataclass(frozen=True, slots=True)
class PreviousSnapshot:
    id: int
    as_of: datetime
    fingerprint: str
    stable_until: datetime | None

    def still_valid(self, as_of: datetime) -> bool:
        """Its values are the values as of `as_of` too, if its fingerprint matches (see fingerprint.py)."""
        return self.as_of <= as_of and (self.stable_until is None or as_of < self.stable_until)


def previous_snapshots(engine: Engine, tenant_pk: int, before: datetime) -> dict[tuple[str, str], PreviousSnapshot]:
    """The rows of the latest run dated before `before`, by (entity, record id)."""
    c = snapshot_t.c
    with engine.connect() as conn, small_page_cache(conn):
        latest = conn.execute(select(func.max(c.as_of)).where(c.tenant_pk == tenant_pk, c.as_of < before)).scalar()
        if latest is None:
            return {}
        rows = conn.execute(
            select(c.id, c.entity, c.record_id, c.as_of, c.fingerprint, c.stable_until).where(
                c.tenant_pk == tenant_pk, c.as_of == latest
            )
        ).all()
    return {(e, r): PreviousSnapshot(i, a, f, s) for i, e, r, a, f, s in rows}


@dataclass(frozen=True, slots=True)
class RunRecord:
    tenant_pk: int
    as_of: datetime
    started_at: datetime
    finished_at: datetime
    mode: str
    tier: str
    accuracy: str
    activities: int
    links: int
    records: int
    details: dict[str, Any]


def write_run(
    engine: Engine,
    run: RunRecord,
    computed: Sequence[SnapshotRow],
    reused: Sequence[int],
) -> int:
    """Replace the tenant's snapshots as of `run.as_of` with these, in one transaction; the run's id."""
    c = snapshot_t.c
    with engine.begin() as conn, small_page_cache(conn):
        conn.execute(delete(snapshot_t).where(c.tenant_pk == run.tenant_pk, c.as_of == run.as_of))
        run_id = conn.execute(
            insert(run_t)
            .values(
                tenant_pk=run.tenant_pk,
                as_of=run.as_of,
                started_at=run.started_at,
                finished_at=run.finished_at,
                mode=run.mode,
                tier=run.tier,
                accuracy=run.accuracy,
                activities=run.activities,
                links=run.links,
                records=run.records,
                computed=len(computed),
                reused=len(reused),
                details=orjson.dumps(run.details).decode(),
            )
            .returning(run_t.c.id)
        ).scalar_one()
        # In chunks: the rows' parameter dicts (and their payloads as text) exist a chunk at a time.
        for start in range(0, len(computed), SNAPSHOT_CHUNK):
            conn.execute(
                insert(snapshot_t),
                [
                    {
                        "tenant_pk": run.tenant_pk,
                        "run_id": run_id,
                        "entity": s.entity,
                        "record_id": s.record_id,
                        "as_of": run.as_of,
                        "computed_at": run.finished_at,
                        "accuracy": run.accuracy,
                        "activities": s.activities,
                        "last_interaction_at": s.last_interaction_at,
                        "health_score": s.health_score,
                        "health_state": s.health_state,
                        "health_trend": s.health_trend,
                        "fingerprint": s.fingerprint,
                        "stable_until": s.stable_until,
                        "payload": s.payload.decode(),
                    }
                    for s in computed[start : start + SNAPSHOT_CHUNK]
                ],
            )
        _copy_forward(conn, reused, run_id, run.as_of, run.accuracy)
    return int(run_id)


def _copy_forward(conn: Any, ids: Sequence[int], run_id: int, as_of: datetime, accuracy: str) -> None:
    c = snapshot_t.c
    columns = [
        "tenant_pk",
        "run_id",
        "entity",
        "record_id",
        "as_of",
        "computed_at",
        "accuracy",
        "activities",
        "last_interaction_at",
        "health_score",
        "health_state",
        "health_trend",
        "fingerprint",
        "stable_until",
        "payload",
    ]
    for i in range(0, len(ids), COPY_CHUNK):
        chunk = list(ids[i : i + COPY_CHUNK])
        source = select(
            c.tenant_pk,
            literal(run_id, c.run_id.type),
            c.entity,
            c.record_id,
            literal(as_of, c.as_of.type),
            c.computed_at,
            literal(accuracy, c.accuracy.type),
            c.activities,
            c.last_interaction_at,
            c.health_score,
            c.health_state,
            c.health_trend,
            c.fingerprint,
            c.stable_until,
            c.payload,
        ).where(c.id.in_(chunk))
        conn.execute(insert(snapshot_t).from_select(columns, source))


def payloads_of(
    engine: Engine, tenant_pk: int, as_of: datetime, record_ids: Iterable[str] | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """(entity, record id) -> payload of the snapshots as of `as_of` (all, or only these records)."""
    c = snapshot_t.c
    query = select(c.entity, c.record_id, c.payload).where(c.tenant_pk == tenant_pk, c.as_of == as_of)
    with engine.connect() as conn:
        if record_ids is None:
            rows = list(conn.execute(query))
        else:
            ids = sorted(set(record_ids))
            rows = [
                r
                for i in range(0, len(ids), COPY_CHUNK)
                for r in conn.execute(query.where(c.record_id.in_(ids[i : i + COPY_CHUNK])))
            ]
    return {(e, r): orjson.loads(p) for e, r, p in rows}


def latest_as_of(engine: Engine, tenant_pk: int) -> datetime | None:
    with engine.connect() as conn:
        return conn.execute(select(func.max(run_t.c.as_of)).where(run_t.c.tenant_pk == tenant_pk)).scalar()


def last_run_started(engine: Engine, tenant_pk: int) -> datetime | None:
    with engine.connect() as conn:
        return conn.execute(select(func.max(run_t.c.started_at)).where(run_t.c.tenant_pk == tenant_pk)).scalar()


# ---------------------------------------------------------------- similar won


def last_similar_as_of(engine: Engine, tenant_pk: int) -> datetime | None:
    with engine.connect() as conn:
        return conn.execute(select(func.max(similar_t.c.as_of)).where(similar_t.c.tenant_pk == tenant_pk)).scalar()


def write_similar(
    engine: Engine, tenant_pk: int, as_of: datetime, computed_at: datetime, rows: Iterable[dict[str, Any]]
) -> int:
    """Replace the similar-won results as of `as_of`; rows: opportunity_id, fallback, eligible_won, matches."""
    values = [
        {
            "tenant_pk": tenant_pk,
            "opportunity_id": r["opportunity_id"],
            "as_of": as_of,
            "computed_at": computed_at,
            "fallback": r["fallback"],
            "eligible_won": r["eligible_won"],
            "matches": orjson.dumps(r["matches"]).decode(),
        }
        for r in rows
    ]
    with engine.begin() as conn:
        conn.execute(delete(similar_t).where(similar_t.c.tenant_pk == tenant_pk, similar_t.c.as_of == as_of))
        if values:
            conn.execute(insert(similar_t), values)
    return len(values)


def similar_of(engine: Engine, tenant_pk: int, opportunity_id: str) -> dict[str, Any] | None:
    """The latest similar-won result of one open opportunity."""
    c = similar_t.c
    with engine.connect() as conn:
        row = conn.execute(
            select(c.as_of, c.fallback, c.eligible_won, c.matches)
            .where(c.tenant_pk == tenant_pk, c.opportunity_id == opportunity_id)
            .order_by(c.as_of.desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    return {
        "as_of": row.as_of.isoformat(),
        "fallback": row.fallback,
        "eligible_won": row.eligible_won,
        "matches": orjson.loads(row.matches),
    }
