"""Work leases: claim a unit with one conditional UPDATE (a compare-and-swap that SQLite and PostgreSQL
both execute atomically), so any number of daemons can share one database safely.

A claim succeeds when the unit is free, its lease expired (its daemon died), or we already hold it, and
when its failure backoff has run out. Release records success or failure; failures back off
exponentially (capped), so a broken unit is retried and reported, never crash-looped.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from relinsights.db.models import WorkLease, table_of

lease_t = table_of(WorkLease)
MAX_BACKOFF = timedelta(hours=1)


def owner_id() -> str:
    """Who holds a lease: host, pid and a random part (a restarted daemon is a new owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _now() -> datetime:
    return datetime.now(UTC)


class Leases:
    def __init__(self, engine: Engine, owner: str | None = None):
        self.engine = engine
        self.owner = owner or owner_id()

    def _ensure(self, unit: str) -> None:
        ins = pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert
        with self.engine.begin() as conn:
            conn.execute(ins(lease_t).values(unit=unit, attempts=0).on_conflict_do_nothing(index_elements=["unit"]))

    def claim(self, unit: str, ttl: timedelta, now: datetime | None = None) -> bool:
        """Take the unit for `ttl` if nobody else holds it and its backoff is over."""
        now = now or _now()
        self._ensure(unit)
        c = lease_t.c
        with self.engine.begin() as conn:
            res = conn.execute(
                update(lease_t)
                .where(
                    c.unit == unit,
                    or_(c.owner.is_(None), c.leased_until.is_(None), c.leased_until < now, c.owner == self.owner),
                    or_(c.next_attempt_at.is_(None), c.next_attempt_at <= now),
                )
                .values(owner=self.owner, leased_until=now + ttl, last_started_at=now)
            )
            return (res.rowcount or 0) == 1

    def renew(self, unit: str, ttl: timedelta) -> bool:
        c = lease_t.c
        with self.engine.begin() as conn:
            res = conn.execute(
                update(lease_t).where(c.unit == unit, c.owner == self.owner).values(leased_until=_now() + ttl)
            )
            return (res.rowcount or 0) == 1

    def release(
        self,
        unit: str,
        error: str | None = None,
        base_backoff: timedelta = timedelta(minutes=1),
        now: datetime | None = None,
    ) -> None:
        """Give the unit back; on failure, push its next attempt out (1, 2, 4... minutes, at most an hour)."""
        c = lease_t.c
        now = now or _now()
        with self.engine.begin() as conn:
            attempts = conn.execute(select(c.attempts).where(c.unit == unit)).scalar() or 0
            values: dict[str, object] = {"owner": None, "leased_until": None, "last_finished_at": now}
            if error is None:
                values.update(attempts=0, next_attempt_at=None, last_error=None)
            else:
                backoff = min(MAX_BACKOFF, base_backoff * (2**attempts))
                values.update(attempts=attempts + 1, next_attempt_at=now + backoff, last_error=error[:4000])
            conn.execute(update(lease_t).where(and_(c.unit == unit, c.owner == self.owner)).values(**values))

    def holders(self) -> dict[str, str]:
        """unit -> owner for every lease currently held (for status and tests)."""
        now = _now()
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(lease_t.c.unit, lease_t.c.owner).where(
                    lease_t.c.owner.is_not(None), lease_t.c.leased_until > now
                )
            ).all()
        return {u: o for u, o in rows}
