"""KPI snapshots and runs in the database: write one run's rows, find the previous ones, read them back.

A run writes one `kpi_snapshot` row per record with linked activity, dated by its `as_of`, in one
transaction with its `kpi_run` row (`RunWriter`): a run is there whole or not at all. Rerunning the same
as-of replaces that as-of's rows. Reused rows are copied forward in SQL (INSERT ... SELECT), so their payload
never travels through Python.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, delete, func, insert, literal, select, update

from relinsights.analytics.spillfile import SpilledBytes
from relinsights.compute.dbcache import small_page_cache
from relinsights.db.models import KpiRun, KpiSnapshot, SimilarWonSnapshot, table_of

snapshot_t, run_t, similar_t = table_of(KpiSnapshot), table_of(KpiRun), table_of(SimilarWonSnapshot)
COPY_CHUNK = 500
# A snapshot row's columns as a run writes them, in the order RunWriter._insert gives them (the id is the
# database's).
SNAPSHOT_COLUMNS = [
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
SNAPSHOT_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class SnapshotRow:
    """One computed record, ready to insert."""

    entity: str
    record_id: str
    # The JSON payload: where it starts in `payloads`, its length. A run holds every record's until it is
    # written (on SQLite, by the run's one write at its end), in a file: as orjson made them they were a third
    # of the job's memory, and zlib-packed in memory packing and unpacking them took 1.6-1.9 s of CPU at
    # 20,000 records (now 0.2 s).
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
    """What a run's row holds besides what its writer was made with (tenant, as-of, start, accuracy) and counts."""

    finished_at: datetime
    mode: str
    tier: str
    activities: int
    links: int
    records: int
    details: dict[str, Any]


class RunWriter:
    """Writes one run in one transaction (`finish`): its computed snapshots as they come (`add`), then the run
    row and its reused rows. Closed before `finish` (a failed run), it writes nothing.

    On PostgreSQL the transaction is open while the KPIs are computed: a thread of its own inserts each chunk
    of rows as it fills, so the server stores them beside the run (at 20,000 records the write was the run's
    last 1.7 s; beside the KPIs the run is 0.6 s shorter). On SQLite the rows wait for `finish`, their payloads
    in a file: a transaction open through the KPIs would hold the database's one write lock, which every other
    writer waits for."""

    def __init__(self, engine: Engine, tenant_pk: int, as_of: datetime, started_at: datetime, accuracy: str) -> None:
        self.engine, self.tenant_pk, self.as_of = engine, tenant_pk, as_of
        self.started_at, self.accuracy = started_at, accuracy
        self.count = 0
        self._rows: list[SnapshotRow] = []  # the rows not yet handed on: SQLite's all, until `finish`
        self._conn: Connection | None = None
        self._open = ExitStack()  # (the connection, with a small page cache on SQLite)
        self._run_id = 0
        dialect = engine.dialect
        marks = ", ".join(["?" if dialect.paramstyle == "qmark" else "%s"] * len(SNAPSHOT_COLUMNS))
        self._sql = f"INSERT INTO {snapshot_t.name} ({', '.join(SNAPSHOT_COLUMNS)}) VALUES ({marks})"
        # PostgreSQL (psycopg): COPY, not an INSERT a row. The server's CPU for 20,000 rows: 0.76-0.97 s, against
        # 1.62-1.84 s, spent beside the KPIs, on the same two cores.
        copy = f"COPY {snapshot_t.name} ({', '.join(SNAPSHOT_COLUMNS)}) FROM STDIN"
        self._copy = copy if dialect.name == "postgresql" and dialect.driver == "psycopg" else None
        # SQLAlchemy's own conversion of a time for this database (none where the driver converts them)
        self._at = snapshot_t.c.as_of.type.dialect_impl(dialect).bind_processor(dialect) or (lambda t: t)
        self._error: BaseException | None = None
        self._chunks: queue.Queue[list[SnapshotRow] | None] | None = None
        self._thread: threading.Thread | None = None
        if dialect.name != "sqlite":
            self._chunks = queue.Queue(maxsize=2)  # (a chunk's payloads read while the next fills)
            self._thread = threading.Thread(target=self._stream, name="snapshot-writer", daemon=True)
            self._thread.start()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, row: SnapshotRow) -> None:
        if self._error is not None:
            raise self._error
        self.count += 1
        self._rows.append(row)
        if self._chunks is not None and len(self._rows) >= SNAPSHOT_CHUNK:
            self._chunks.put(self._rows)
            self._rows = []

    def finish(self, run: RunRecord, reused: Sequence[int]) -> int:
        """Write the run (its counts: `count` computed, `reused` copied forward) and commit; the run's id."""
        if self._chunks is None:
            self._begin()
            for i in range(0, len(self._rows), SNAPSHOT_CHUNK):
                self._insert(self._rows[i : i + SNAPSHOT_CHUNK])
            self._rows = []
        else:
            self._end_stream()
        conn = self._conn
        assert conn is not None
        conn.execute(
            update(run_t)
            .where(run_t.c.id == self._run_id)
            .values(
                finished_at=run.finished_at,
                mode=run.mode,
                tier=run.tier,
                activities=run.activities,
                links=run.links,
                records=run.records,
                computed=self.count,
                reused=len(reused),
                details=orjson.dumps(run.details).decode(),
            )
        )
        _copy_forward(conn, reused, self._run_id, self.as_of, self.accuracy)
        conn.commit()
        self.close()
        return self._run_id

    def close(self) -> None:
        """End the writer; what `finish` did not commit is rolled back."""
        if self._thread is not None:
            self._end_stream(finishing=False)
        self._open.close()  # (the connection closed rolls back what is not committed)
        self._conn = None

    def _begin(self) -> None:
        """The transaction: the run's as-of rows gone, the run row made (its counts set by `finish`)."""
        self._conn = conn = self._open.enter_context(small_page_cache(self._open.enter_context(self.engine.connect())))
        c = snapshot_t.c
        conn.execute(delete(snapshot_t).where(c.tenant_pk == self.tenant_pk, c.as_of == self.as_of))
        self._run_id = conn.execute(
            insert(run_t)
            .values(
                tenant_pk=self.tenant_pk,
                as_of=self.as_of,
                started_at=self.started_at,
                mode="",
                tier="",
                accuracy=self.accuracy,
            )
            .returning(run_t.c.id)
        ).scalar_one()

    def _insert(self, rows: Sequence[SnapshotRow]) -> None:
        # (a chunk at a time: the rows' parameters, and their payloads as text, exist a chunk at a time)
        assert self._conn is not None
        at = self._at
        run = (self.tenant_pk, self._run_id)
        now = (at(self.as_of), at(datetime.now(UTC)), self.accuracy)
        # Plain tuples through the driver, not SQLAlchemy's processing of each row's parameters: SQLite's write of
        # 20,000 rows 0.94 -> 0.85-0.88 s.
        values = (
            (
                *run,
                s.entity,
                s.record_id,
                *now,
                s.activities,
                at(s.last_interaction_at),
                s.health_score,
                s.health_state,
                s.health_trend,
                s.fingerprint,
                at(s.stable_until),
                s.payload.decode(),
            )
            for s in rows
        )
        if self._copy is None:
            self._conn.exec_driver_sql(self._sql, list(values))
            return
        driver = self._conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(self._copy) as copy:
            for value in values:
                copy.write_row(value)

    def _stream(self) -> None:
        assert self._chunks is not None
        try:
            self._begin()
            while (chunk := self._chunks.get()) is not None:
                self._insert(chunk)
        except BaseException as e:  # (handed to the computing thread: `add` and `finish` raise it)
            self._error = e
            while self._chunks.get() is not None:  # (the computing thread is never left waiting on a full queue)
                pass

    def _end_stream(self, finishing: bool = True) -> None:
        """The thread ended: the last rows inserted when finishing (a failed run's are not), its error raised."""
        assert self._chunks is not None and self._thread is not None
        if self._thread.is_alive():
            if finishing and self._rows:
                self._chunks.put(self._rows)
            self._rows = []
            self._chunks.put(None)
            self._thread.join()
        if finishing and self._error is not None:
            raise self._error


def _copy_forward(conn: Any, ids: Sequence[int], run_id: int, as_of: datetime, accuracy: str) -> None:
    c = snapshot_t.c
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
        conn.execute(insert(snapshot_t).from_select(SNAPSHOT_COLUMNS, source))


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
