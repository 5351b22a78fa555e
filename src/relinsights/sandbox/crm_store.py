"""The sandbox's Dataverse tables: rows, row versions, tombstones of deleted rows, and transactions.

Every insert, update and delete takes the next organisation-wide row version (Dataverse's
`versionnumber`, also the row's etag); change tracking compares versions and tombstones with the version
a delta token carries. A transaction records what it touched so a failed `$batch` change set or bulk
operation can be undone as a whole.

Values are kept typed (str, int, float, bool, datetime, date, `Ref` for lookups); `dataverse_schema`
declares the columns. Callers hold `org.lock` (the HTTPS server runs in its own thread).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import ids
from .dataverse_schema import BY_SET, ENTITIES, KPI_TABLES, Entity, Ref, to_json
from .model import Org

# Default status reason of each state (statecode -> statuscode), where it is not 0 -> 1.
DEFAULT_STATUS: dict[str, dict[int, int]] = {
    "lead": {0: 1, 1: 3, 2: 4},
    "opportunity": {0: 1, 1: 3, 2: 4},
    "phonecall": {0: 1, 1: 2, 2: 3},
    "email": {0: 1, 1: 3, 2: 5},
    "appointment": {0: 1, 1: 3, 2: 4, 3: 5},
}
FIRST_VERSION = 1_000_000  # Dataverse row versions are large numbers


@dataclass
class Transaction:
    """Undo log of one unit of work: (table, id, the row before or None) and tombstone list lengths."""

    rows: list[tuple[str, str, dict[str, Any] | None]] = field(default_factory=list)
    tombstones: dict[str, int] = field(default_factory=dict)
    done: bool = False


class CrmStore:
    def __init__(self, org: Org) -> None:
        self.org = org
        self.tables: dict[str, dict[str, dict[str, Any]]] = {e: {} for e in ENTITIES}
        self.tombstones: dict[str, list[tuple[int, str]]] = {e: [] for e in ENTITIES}
        self.version = FIRST_VERSION
        self.app_user_id: str | None = None  # the daemon's application user (systemuser id)
        self.organization_id = ids.guid(org.seed, "dataverse-organization")
        self.root_business_unit: str | None = None
        self.written: dict[str, int] = {}  # table -> rows created or updated through the Web API
        self._tx: list[Transaction] = []
        self._new = 0

    # ------------------------------------------------------------ reading

    @staticmethod
    def entity(name: str) -> Entity:
        """By logical name or entity set name."""
        return ENTITIES[name] if name in ENTITIES else BY_SET[name]

    def get(self, table: str, row_id: str) -> dict[str, Any] | None:
        return self.tables[table].get(row_id.lower())

    def rows(self, table: str) -> dict[str, dict[str, Any]]:
        return self.tables[self.entity(table).logical]

    def name_of(self, ref: Ref | None) -> str | None:
        """The primary name of a referenced row (a lookup's formatted value)."""
        if ref is None:
            return None
        e = ENTITIES.get(ref.entity)
        row = self.tables[ref.entity].get(ref.id) if e else None
        if row is None or e is None or e.primary_name is None:
            return None
        value = row.get(e.primary_name)
        return str(value) if value is not None else None

    def changed_since(self, table: str, version: int) -> tuple[list[dict[str, Any]], list[str]]:
        """Rows created or updated after `version` (by id), and ids deleted after it (not live now)."""
        e = self.entity(table)
        live = self.tables[e.logical]
        changed = sorted((r for r in live.values() if r["versionnumber"] > version), key=lambda r: r[e.pk])
        gone = sorted({i for v, i in self.tombstones[e.logical] if v > version and i not in live})
        return changed, gone

    # ------------------------------------------------------------ writing

    def new_id(self) -> str:
        self._new += 1
        return ids.guid(self.org.seed, "dataverse-row", self._new)

    def _next_version(self) -> int:
        self.version += 1
        return self.version

    def _remember(self, table: str, row_id: str) -> None:
        if not self._tx:
            return
        tx = self._tx[-1]
        old = self.tables[table].get(row_id)
        tx.rows.append((table, row_id, dict(old) if old is not None else None))
        tx.tombstones.setdefault(table, len(self.tombstones[table]))

    def insert(
        self,
        table: str,
        values: dict[str, Any],
        *,
        row_id: str | None = None,
        at: datetime | None = None,
        by: str | None = None,
    ) -> dict[str, Any]:
        e = self.entity(table)
        rid = (row_id or values.get(e.pk) or self.new_id()).lower()
        if rid in self.tables[e.logical]:
            raise KeyError(rid)
        self._remember(e.logical, rid)
        row: dict[str, Any] = dict.fromkeys(e.columns)
        row[e.pk] = rid
        if "statecode" in e.columns:
            row["statecode"] = 0
        row.update({k: v for k, v in values.items() if k != e.pk})
        when = (at or self.org.now()).astimezone(UTC).replace(microsecond=0)
        for col in ("createdon", "modifiedon"):
            if col in e.columns:
                row[col] = when
        author = by or self.app_user_id
        for col in ("createdby", "modifiedby"):
            if col in e.columns and author:
                row[col] = Ref("systemuser", author)
        self._derive(e, row, set(values))
        row["versionnumber"] = self._next_version()
        self.tables[e.logical][rid] = row
        return row

    def update(
        self, table: str, row_id: str, values: dict[str, Any], *, at: datetime | None = None, by: str | None = None
    ) -> dict[str, Any]:
        e = self.entity(table)
        rid = row_id.lower()
        row = self.tables[e.logical][rid]
        self._remember(e.logical, rid)
        row.update({k: v for k, v in values.items() if k != e.pk})
        if "modifiedon" in e.columns:
            row["modifiedon"] = (at or self.org.now()).astimezone(UTC).replace(microsecond=0)
        author = by or self.app_user_id
        if "modifiedby" in e.columns and author:
            row["modifiedby"] = Ref("systemuser", author)
        self._derive(e, row, set(values))
        row["versionnumber"] = self._next_version()
        return row

    def delete(self, table: str, row_id: str) -> None:
        e = self.entity(table)
        rid = row_id.lower()
        if rid not in self.tables[e.logical]:
            raise KeyError(rid)
        self._remember(e.logical, rid)
        del self.tables[e.logical][rid]
        self.tombstones[e.logical].append((self._next_version(), rid))
        # cascades Dataverse performs: an activity's parties, a connection's reciprocal, a team's members
        if e.logical in ("phonecall", "email", "appointment"):
            for pid, p in list(self.tables["activityparty"].items()):
                if p["activityid"] is not None and p["activityid"].id == rid:
                    self.delete("activityparty", pid)
        elif e.logical == "connection":
            for cid, c in list(self.tables["connection"].items()):
                if c["relatedconnectionid"] is not None and c["relatedconnectionid"].id == rid:
                    self.delete("connection", cid)
        elif e.logical == "team":
            for mid, m in list(self.tables["teammembership"].items()):
                if m["teamid"] == rid:
                    self.delete("teammembership", mid)

    def _derive(self, e: Entity, row: dict[str, Any], changed: set[str]) -> None:
        """Columns Dataverse computes: full names, hours from minutes, default status reasons."""
        if "fullname" in e.columns and {"firstname", "lastname"} & changed:
            parts = [row.get("firstname"), row.get("lastname")]
            row["fullname"] = " ".join(p for p in parts if p) or row.get("fullname")
        for minutes in ("msdyn_timespentbyteam", "msdyn_timespentbycustomer"):
            if f"{minutes}_calculated" in e.columns:
                v = row.get(minutes)
                row[f"{minutes}_calculated"] = None if v is None else round(v / 60, 1)
        if "statecode" in changed and "statuscode" not in changed and "statuscode" in e.columns:
            row["statuscode"] = DEFAULT_STATUS.get(e.logical, {}).get(row["statecode"], row["statecode"] + 1)
        if e.logical in ("phonecall", "email", "appointment"):
            row["activitytypecode"] = e.logical
        if e.logical == "appointment" and row.get("scheduledstart") and row.get("scheduledend"):
            row["scheduleddurationminutes"] = int((row["scheduledend"] - row["scheduledstart"]).total_seconds() // 60)
        if e.logical == "connection":
            row["name"] = self.name_of(row.get("record2id"))

    # ------------------------------------------------------------ transactions

    def begin(self) -> Transaction:
        tx = Transaction()
        self._tx.append(tx)
        return tx

    def commit(self, tx: Transaction) -> None:
        self._close(tx)
        if self._tx:  # a nested unit: the outer one can still undo what this one did
            outer = self._tx[-1]
            outer.rows += tx.rows
            for t, n in tx.tombstones.items():
                outer.tombstones.setdefault(t, n)

    def rollback(self, tx: Transaction) -> None:
        self._close(tx)
        for table, rid, old in reversed(tx.rows):
            if old is None:
                self.tables[table].pop(rid, None)
            else:
                self.tables[table][rid] = old
        for table, n in tx.tombstones.items():
            del self.tombstones[table][n:]

    def _close(self, tx: Transaction) -> None:
        if tx.done or not self._tx or self._tx[-1] is not tx:
            raise RuntimeError("transactions must end innermost first, once")
        tx.done = True
        self._tx.pop()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """All or nothing: an exception undoes every change made inside."""
        tx = self.begin()
        try:
            yield tx
        except BaseException:
            self.rollback(tx)
            raise
        self.commit(tx)

    # ------------------------------------------------------------ truth

    def truth(self, tables: Iterable[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """What a complete mirror holds: entity set -> id -> {web column name: JSON value}."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for name in tables or [e.set_name for e in ENTITIES.values()]:
            e = self.entity(name)
            out[e.set_name] = {
                rid: {c.web_name: to_json(c, row.get(c.name)) for c in e.columns.values()}
                for rid, row in sorted(self.tables[e.logical].items())
            }
        return out

    def kpi_rows(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The relationship-analytics rows written so far (what a write-back left in Dataverse)."""
        return self.truth(KPI_TABLES)

    def stats(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "rows": {ENTITIES[t].set_name: len(rows) for t, rows in self.tables.items() if rows},
            "deleted": {ENTITIES[t].set_name: len(v) for t, v in self.tombstones.items() if v},
            "written": dict(self.written),
        }
