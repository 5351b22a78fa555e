"""What `relinsights kpis show|list` read: a record found by address, domain or id, and its latest KPIs.

The latest KPIs of a tenant are its snapshots at the newest as-of any run computed. A record without
a snapshot there had no linked activity as of then (an older snapshot of it is history, not current).

Lookup rules: an address names the contacts (first) and leads with that address in emailaddress1..3;
a domain names the accounts owning it (the registrable domain of their website or email, or the
tenant's `kpi.account_domains` mapping); anything else is a record id, optionally prefixed with its
entity (`contact:<id>`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Engine, select

from relinsights.analytics.matching import website_domain
from relinsights.analytics.parties import canonical_address, canonical_domain, domain_of, registrable_domain
from relinsights.compute.payload import series_days
from relinsights.compute.store import latest_as_of, similar_of, snapshot_t
from relinsights.config import PARENT_SETS, TenantConfig
from relinsights.db.models import CrmRecord, table_of

crm_t = table_of(CrmRecord)
# The set names come from the config's one table; this order (people first) is the search order.
ENTITY_SETS = {e: PARENT_SETS[e] for e in ("contact", "lead", "account", "opportunity")}
ENTITY_OF_SET = {v: k for k, v in ENTITY_SETS.items()}
STATES = {"good": "Good", "fair": "Fair", "poor": "Poor", "not-enough-info": "Not enough info"}
GUID_LENGTH = 36
TRENDS = {"improving": "Improving", "steady": "Steady", "declining": "Declining", "not-enough-info": "Not enough info"}


@dataclass(frozen=True, slots=True)
class RecordHit:
    entity: str
    record_id: str
    name: str | None
    why: str  # what matched: "emailaddress1", "website", "id"...


def record_name(entity: str, row: dict[str, Any]) -> str | None:
    value = row.get("name") if entity in ("account", "opportunity") else row.get("fullname")
    return str(value) if value else None


def _rows(engine: Engine, tenant_pk: int, entity: str) -> list[tuple[str, dict[str, Any]]]:
    with engine.connect() as conn:
        found = conn.execute(
            select(crm_t.c.record_id, crm_t.c.data).where(
                crm_t.c.tenant_pk == tenant_pk, crm_t.c.entity_set == ENTITY_SETS[entity]
            )
        ).all()
    return [(rid, orjson.loads(data)) for rid, data in found]


def find_records(engine: Engine, tenant: TenantConfig, tenant_pk: int, query: str) -> list[RecordHit]:
    text = query.strip()
    if "@" in text:
        address = canonical_address(text)
        hits = []
        for entity in ("contact", "lead"):
            for rid, row in _rows(engine, tenant_pk, entity):
                for col in ("emailaddress1", "emailaddress2", "emailaddress3"):
                    if address and canonical_address(row.get(col)) == address:
                        hits.append(RecordHit(entity, rid, record_name(entity, row), col))
                        break
        return hits
    entity, _, rid = text.lower().rpartition(":")
    if entity in ENTITY_SETS or _looks_like_id(rid):
        return _by_id(engine, tenant_pk, rid, entity or None)
    domain = canonical_domain(text)
    if domain is None:
        return []
    wanted = registrable_domain(domain)
    mapped = {a.lower() for a, ds in tenant.kpi.account_domains.items() for d in ds if _registrable(d) == wanted}
    hits = []
    for rid, row in _rows(engine, tenant_pk, "account"):
        email = canonical_address(row.get("emailaddress1"))
        sources = {
            "account_domains": rid in mapped,
            "websiteurl": _registrable(website_domain(row.get("websiteurl"))) == wanted,
            "emailaddress1": email is not None and registrable_domain(domain_of(email)) == wanted,
        }
        why = next((k for k, v in sources.items() if v), None)
        if why:
            hits.append(RecordHit("account", rid, record_name("account", row), why))
    return hits


def _registrable(domain: str | None) -> str | None:
    canon = canonical_domain(domain) if domain else None
    return registrable_domain(canon) if canon else None


def _looks_like_id(text: str) -> bool:
    return len(text) >= 8 and all(c in "0123456789abcdef-" for c in text)


def _by_id(engine: Engine, tenant_pk: int, rid: str, entity: str | None) -> list[RecordHit]:
    """An id, or the start of one (as `kpis list` shows them) when it is shorter than a GUID."""
    sets = [ENTITY_SETS[entity]] if entity else list(ENTITY_SETS.values())
    match = crm_t.c.record_id == rid if len(rid) >= GUID_LENGTH else crm_t.c.record_id.startswith(rid)
    with engine.connect() as conn:
        rows = conn.execute(
            select(crm_t.c.entity_set, crm_t.c.record_id, crm_t.c.data).where(
                crm_t.c.tenant_pk == tenant_pk, match, crm_t.c.entity_set.in_(sets)
            )
        ).all()
        if not rows:  # deleted from the CRM since: its snapshots may still be there
            s = snapshot_t.c
            found = conn.execute(
                select(s.entity, s.record_id)
                .where(
                    s.tenant_pk == tenant_pk,
                    s.record_id == rid if len(rid) >= GUID_LENGTH else s.record_id.startswith(rid),
                )
                .distinct()
            ).all()
            return [RecordHit(e, r, None, "id") for e, r in found if entity is None or e == entity]
    return [RecordHit(ENTITY_OF_SET[s], r, record_name(ENTITY_OF_SET[s], orjson.loads(d)), "id") for s, r, d in rows]


def names_of(engine: Engine, tenant_pk: int, refs: list[tuple[str, str]]) -> dict[tuple[str, str], str | None]:
    out: dict[tuple[str, str], str | None] = {}
    ids = sorted({rid for _, rid in refs})
    with engine.connect() as conn:
        for i in range(0, len(ids), 500):
            for s, rid, data in conn.execute(
                select(crm_t.c.entity_set, crm_t.c.record_id, crm_t.c.data).where(
                    crm_t.c.tenant_pk == tenant_pk,
                    crm_t.c.record_id.in_(ids[i : i + 500]),
                    crm_t.c.entity_set.in_(list(ENTITY_OF_SET)),
                )
            ):
                entity = ENTITY_OF_SET[s]
                out[(entity, rid)] = record_name(entity, orjson.loads(data))
    return out


def show_view(engine: Engine, tenant: TenantConfig, tenant_pk: int, hit: RecordHit) -> dict[str, Any] | None:
    """The record's latest KPIs: metadata plus the stored payload under its own keys. None: never computed."""
    as_of = latest_as_of(engine, tenant_pk)
    if as_of is None:
        return None
    c = snapshot_t.c
    with engine.connect() as conn:
        row = conn.execute(
            select(c.computed_at, c.accuracy, c.payload).where(
                c.tenant_pk == tenant_pk, c.as_of == as_of, c.entity == hit.entity, c.record_id == hit.record_id
            )
        ).first()
    days = series_days(as_of, tenant.zone)
    view: dict[str, Any] = {
        "tenant": tenant.name,
        "record": {"entity": hit.entity, "id": hit.record_id, "name": hit.name},
        "as_of": as_of.isoformat(),
        "linked": row is not None,
        "series_first_day": days[0].isoformat(),
        "series_last_day": days[-1].isoformat(),
    }
    if row is None:
        return view
    view.update(computed_at=_iso(row.computed_at), accuracy=row.accuracy)
    view.update(orjson.loads(row.payload))
    if hit.entity == "opportunity":
        view["similar_won"] = similar_of(engine, tenant_pk, hit.record_id)
    return view


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def list_view(
    engine: Engine,
    tenant: TenantConfig,
    tenant_pk: int,
    *,
    state: str | None = None,
    trend: str | None = None,
    entity: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Records with a health score, the ones needing attention first: lowest score, then declining."""
    as_of = latest_as_of(engine, tenant_pk)
    if as_of is None:
        return []
    c = snapshot_t.c
    query = select(
        c.entity,
        c.record_id,
        c.health_score,
        c.health_state,
        c.health_trend,
        c.activities,
        c.last_interaction_at,
        c.accuracy,
    ).where(c.tenant_pk == tenant_pk, c.as_of == as_of, c.health_score.is_not(None))
    if state:
        query = query.where(c.health_state == STATES[state])
    if trend:
        query = query.where(c.health_trend == TRENDS[trend])
    if entity:
        query = query.where(c.entity == entity)
    with engine.connect() as conn:
        rows = list(conn.execute(query).all())
    rows.sort(
        key=lambda r: (
            r.health_state == STATES["not-enough-info"],
            r.health_score,
            r.health_trend != TRENDS["declining"],
            -r.activities,
            r.entity,
            r.record_id,
        )
    )
    rows = rows[:limit] if limit else rows
    refs = [(r.entity, r.record_id) for r in rows]
    names = names_of(engine, tenant_pk, refs)
    health = _health_of(engine, tenant_pk, as_of, refs)
    return [
        {
            "tenant": tenant.name,
            "entity": r.entity,
            "id": r.record_id,
            "name": names.get((r.entity, r.record_id)),
            "health_score": r.health_score,
            "health_state": r.health_state,
            "health_trend": r.health_trend,
            "weakest_part": health.get((r.entity, r.record_id), {}).get("weakest_part"),
            "reason": health.get((r.entity, r.record_id), {}).get("reason"),
            "activities": r.activities,
            "last_interaction": _iso(r.last_interaction_at),
            "accuracy": r.accuracy,
            "as_of": as_of.isoformat(),
        }
        for r in rows
    ]


def _health_of(
    engine: Engine, tenant_pk: int, as_of: datetime, refs: list[tuple[str, str]]
) -> dict[tuple[str, str], dict[str, Any]]:
    c = snapshot_t.c
    out: dict[tuple[str, str], dict[str, Any]] = {}
    ids = sorted({rid for _, rid in refs})
    wanted = set(refs)
    with engine.connect() as conn:
        for i in range(0, len(ids), 500):
            for e, rid, payload in conn.execute(
                select(c.entity, c.record_id, c.payload).where(
                    c.tenant_pk == tenant_pk, c.as_of == as_of, c.record_id.in_(ids[i : i + 500])
                )
            ):
                if (e, rid) in wanted:
                    out[(e, rid)] = orjson.loads(payload).get("health") or {}
    return out
