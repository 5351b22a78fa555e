"""KPI snapshots -> the Dataverse rows the write-back wants to exist (pure: no I/O).

One record's snapshot becomes one KPI row (its id chosen by `kpi_row_id` unless the parent already points at
a KPI row), the days of its 60-day series that had activity, and up to three rows per side of top contacts.
Every row carries a hash of its values (`hash`), timestamps left out, so a row whose values did not move
since the last successful write is skipped even though each day's computation has a new as-of.

Decisions the KPI tables leave open (docs: dataverse.md):

- Response rates are written as percentages (0-100, 2 decimals): the columns are decimals of precision 2,
  which would round a 0..1 rate to two digits. Response times are hours with 2 decimals.
- `msdyn_date` and `msdyn_acilastupdatetimestamp` are the as-of and the time of the computation that last
  changed the row's values: a row is not rewritten only to move its dates.
- A record without health (no activity in the health window) is written as "Not enough info", trend
  "Not applicable".
- `msdyn_lastactivitytype` / `msdyn_nextactivitytype` hold the Dataverse activity table (email,
  appointment, phonecall); `..id` the activity's dedup key (a CRM activity id for CRM activities, else the
  message or meeting identity), cut to the column's 100 characters.
- `msdyn_numberofopportunities` (contacts) counts the opportunities whose parent contact or stakeholder the
  contact is, whatever their state.
- Top contacts: `msdyn_mostcontactedby` holds the record's team members who contacted it most (ours),
  `msdyn_mostcontacted` the record's own people we were in contact with most (theirs), one row per rank.
- Daily series rows exist for the days with activity; a day that had activity and now has none (a message
  deleted) is written back as zeros while it is in the window.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from relinsights.compute.payload import COUNT_KEYS
from relinsights.config import PARENT_SETS, TableRef, WritebackConfig

# A fixed namespace: the same record always gets the same KPI row id, in every replica and every run.
NAMESPACE = uuid.UUID("7d4cf1e6-1b55-4c47-9a43-5b1f3f0f2b7e")

HEALTH_STATE = {"Good": 0, "Fair": 1, "Poor": 2, "Not enough info": 3}
HEALTH_TREND = {"Improving": 0, "Steady": 1, "Declining": 2, "Not enough info": 3}
NOT_APPLICABLE_TREND = 5
ACCURACY = {"Complete": 100000000, "Partial": 100000001}
ACTIVITY_TABLE = {"email": "email", "meeting": "appointment", "call": "phonecall"}
DIRECTION = {"incoming": 0, "outgoing": 1}
COUNT_COLUMNS = dict(
    zip(
        COUNT_KEYS,
        ("emails_sent", "emails_received", "meetings_sent", "meetings_received", "calls_made", "calls_received"),
        strict=True,
    )
)
NAME_LENGTH = 100
TOP_RANKS = 3

KPI, DAILY, TOP, LINK = "kpi", "daily", "top", "link"


def kpi_row_id(table: str, *parts: str) -> str:
    """The deterministic id of a row we own: uuid5 of '<table>/<parent id>[/<part>...]'."""
    return str(uuid.uuid5(NAMESPACE, "/".join((table, *parts))))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The latest stored KPIs of one record, as the write-back reads them."""

    entity: str
    record_id: str
    as_of: datetime
    computed_at: datetime
    accuracy: str
    payload: Mapping[str, Any]


@dataclass(slots=True)
class Row:
    """One row we want in Dataverse: its table, id, values (lookups as @odata.bind) and their hash."""

    kind: str  # kpi | daily | top, or link: a record's lookup to its KPI row (an update, not in the ledger)
    table: TableRef
    row_id: str
    parent_entity: str
    parent_id: str
    body: dict[str, Any]
    stamps: dict[str, Any] = field(default_factory=dict)  # written with the row, left out of the hash
    day: str | None = None  # daily rows: the day
    after: tuple[str, str] | None = None  # links: the (entity set, id) of the KPI row that must exist first

    @property
    def hash(self) -> str:
        return hashlib.blake2b(orjson.dumps(self.body, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()

    def target(self) -> dict[str, Any]:
        """The row as an UpsertMultiple target / PATCH body: its key, its values, its stamps."""
        return {self.table.primary_key: self.row_id, **self.body, **self.stamps}


def _iso(value: datetime) -> str:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)  # the database keeps UTC, SQLite without zone
    return aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _set(body: dict[str, Any], cfg: WritebackConfig, kpi: str, value: Any) -> None:
    if column := cfg.column(kpi):
        body[column] = value


def _bind(nav: str, entity: str, record_id: str) -> dict[str, str]:
    return {f"{nav}@odata.bind": f"/{PARENT_SETS[entity]}({record_id})"} if nav else {}


def _round(value: Any, digits: int = 2) -> float | None:
    return round(float(value), digits) if isinstance(value, int | float) else None


def _percent(value: Any) -> float | None:
    return round(float(value) * 100, 2) if isinstance(value, int | float) else None


def _interaction(body: dict[str, Any], cfg: WritebackConfig, which: str, value: Mapping[str, Any] | None) -> None:
    value = value or {}
    _set(body, cfg, f"{which}_activity_time", _utc(value.get("time")))
    _set(body, cfg, f"{which}_activity_direction", DIRECTION.get(str(value.get("direction"))))
    key = value.get("activity_key")
    _set(body, cfg, f"{which}_activity_id", str(key)[:NAME_LENGTH] if key else None)
    _set(body, cfg, f"{which}_activity_type", ACTIVITY_TABLE.get(str(value.get("kind"))))


def _utc(value: Any) -> str | None:
    """An ISO time from the payload as Dataverse writes date-times: UTC with Z."""
    if not value:
        return None
    parsed = datetime.fromisoformat(str(value))
    return _iso(parsed)


def kpi_row(s: Snapshot, cfg: WritebackConfig, *, row_id: str, name: str, opportunities: int | None) -> Row:
    p = s.payload
    mapping = cfg.parent(s.entity)
    body: dict[str, Any] = {}
    _set(body, cfg, "name", name[:NAME_LENGTH])
    body.update(_bind(mapping.kpi_parent, s.entity, s.record_id))
    for key in COUNT_KEYS:
        _set(body, cfg, COUNT_COLUMNS[key], int(p.get(key) or 0))
    _set(body, cfg, "time_spent_by_team", round(p.get("time_spent_by_team_minutes") or 0))
    _set(body, cfg, "time_spent_by_customer", round(p.get("time_spent_by_customer_minutes") or 0))
    _set(body, cfg, "response_time_by_us", _round(p.get("average_first_response_time_by_us_hours")))
    _set(body, cfg, "response_time_by_them", _round(p.get("average_first_response_time_by_them_hours")))
    _set(body, cfg, "response_rate_by_us", _percent(p.get("response_rate_by_us")))
    _set(body, cfg, "response_rate_by_them", _percent(p.get("response_rate_by_them")))
    health = p.get("health") or {}
    _set(body, cfg, "health_score", health.get("score"))
    _set(body, cfg, "health_state", HEALTH_STATE.get(str(health.get("state")), HEALTH_STATE["Not enough info"]))
    _set(body, cfg, "health_trend", HEALTH_TREND.get(str(health.get("trend")), NOT_APPLICABLE_TREND))
    _set(body, cfg, "accuracy", ACCURACY.get(s.accuracy, ACCURACY["Partial"]))
    if s.entity in ("lead", "opportunity"):
        _interaction(body, cfg, "last", p.get("last_interaction"))
        _interaction(body, cfg, "next", p.get("next_interaction"))
    if s.entity == "contact" and opportunities is not None:
        _set(body, cfg, "number_of_opportunities", opportunities)
    stamps: dict[str, Any] = {}
    _set(stamps, cfg, "date", _iso(s.as_of))
    _set(stamps, cfg, "updated_at", _iso(s.computed_at))
    return Row(KPI, mapping.kpi, row_id, s.entity, s.record_id, body, stamps)


def link_row(entity: str, record_id: str, nav: str, kpi: TableRef, kpi_id: str) -> Row:
    """The record's lookup to its KPI row, sent by UpdateMultiple: it never creates a CRM record."""
    table = TableRef(table=entity, entity_set=PARENT_SETS[entity])
    body = {f"{nav}@odata.bind": f"/{kpi.entity_set}({kpi_id})"}
    return Row(LINK, table, record_id, entity, record_id, body, after=(kpi.entity_set, kpi_id))


def daily_rows(s: Snapshot, cfg: WritebackConfig, name: str, days: Iterable[str]) -> list[Row]:
    """The series' rows for `days` (those with activity, plus any written before that must go to zero)."""
    mapping = cfg.parent(s.entity)
    if mapping.daily is None or not cfg.daily_series:
        return []
    series: Mapping[str, Mapping[str, int]] = s.payload.get("relationship_activities") or {}
    out = []
    for day in sorted(days):
        counts = series.get(day, {})
        body: dict[str, Any] = {"msdyn_date": day}
        _set(body, cfg, "name", f"{name} {day}"[:NAME_LENGTH])
        body.update(_bind(mapping.daily_parent, s.entity, s.record_id))
        if mapping.daily_parent_id:
            body[mapping.daily_parent_id] = s.record_id
        for key in COUNT_KEYS:
            _set(body, cfg, COUNT_COLUMNS[key], int(counts.get(key) or 0))
        _set(body, cfg, "accuracy", ACCURACY.get(s.accuracy, ACCURACY["Partial"]))
        out.append(
            Row(
                DAILY,
                mapping.daily,
                kpi_row_id(mapping.daily.table, s.record_id, day),
                s.entity,
                s.record_id,
                body,
                day=day,
            )
        )
    return out


Person = tuple[str, str, str]  # display name, logical name (systemuser, contact...), id


def top_rows(s: Snapshot, cfg: WritebackConfig, people: Mapping[str, Person]) -> list[Row]:
    """Top contacts, one row per side and rank; `people` names the person keys the payload holds."""
    if not cfg.top_contacts:
        return []
    out = []
    for table, side in ((cfg.most_contacted_by, "top_contacts_ours"), (cfg.most_contacted, "top_contacts_theirs")):
        for rank, t in enumerate(s.payload.get(side) or (), start=1):
            person = str(t.get("person") or "")
            display, logical, person_id = people.get(person, (person, "", person))
            body: dict[str, Any] = {
                "msdyn_primaryname": display[:NAME_LENGTH],
                "msdyn_name": f"{rank}. {display}"[:NAME_LENGTH],
                "msdyn_entityid": person_id[:NAME_LENGTH],
                "msdyn_entityname": logical,
                "msdyn_regardingentityid": s.record_id,
                "msdyn_regardingentityname": s.entity,
                "msdyn_numberofemails": int(t.get("emails") or 0),
                "msdyn_numberofmeetings": int(t.get("meetings") or 0),
                "msdyn_numberofphonecalls": int(t.get("calls") or 0),
                "msdyn_lastcontactedon": _utc(t.get("last_contacted")),
                **_bind(f"msdyn_{s.entity}_regardingObjectId", s.entity, s.record_id),
            }
            _set(body, cfg, "accuracy", ACCURACY.get(s.accuracy, ACCURACY["Partial"]))
            out.append(Row(TOP, table, kpi_row_id(table.table, s.record_id, str(rank)), s.entity, s.record_id, body))
            if rank == TOP_RANKS:
                break
    return out


def mapped_columns(cfg: WritebackConfig) -> dict[str, list[str]]:
    """Entity set -> the columns the write-back writes there, as `$select` names (lookups as _x_value).

    Built from sample rows, so `doctor` checks exactly what a write-back would send.
    """
    now = datetime.now(UTC)
    contact = {"person": "p", "emails": 1, "meetings": 0, "calls": 0, "last_contacted": now.isoformat()}
    interaction = {"time": now.isoformat(), "kind": "email", "direction": "outgoing", "activity_key": "k"}
    payload = {
        "relationship_activities": {now.date().isoformat(): {}},
        "top_contacts_ours": [contact],
        "top_contacts_theirs": [contact],
        "last_interaction": interaction,
        "next_interaction": interaction,
    }
    out: dict[str, list[str]] = {}
    for entity in PARENT_SETS:
        s = Snapshot(entity, "00000000-0000-0000-0000-000000000000", now, now, "Complete", payload)
        mapping = cfg.parent(entity)
        rows = [kpi_row(s, cfg, row_id="x", name="x", opportunities=0)]
        rows += daily_rows(s, cfg, "x", [now.date().isoformat()]) + top_rows(s, cfg, {})
        for r in rows:
            names = [r.table.primary_key] + [
                # A lookup's column is its navigation property in lower case (msdyn_contact_regardingObjectId).
                f"_{k.removesuffix('@odata.bind').lower()}_value" if k.endswith("@odata.bind") else k
                for k in (*r.body, *r.stamps)
            ]
            known = out.setdefault(r.table.entity_set, [])
            known += [n for n in names if n not in known]
        if mapping.parent_kpi:
            out.setdefault(PARENT_SETS[entity], [f"{entity}id"]).append(f"_{mapping.parent_kpi}_value")
    return out
