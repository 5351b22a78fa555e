"""The CRM mirror: Dataverse tables the analytics need, copied incrementally into `crm_record`.

Tables with change tracking are followed with stored delta links (a full read again when a link
expires); the two Dataverse keeps without change tracking are handled the way its docs suggest:
activity parties are re-read for the activities that changed, team memberships are re-read whole (they
are small). Rows are kept as the JSON Dataverse returned, with `parent_id` set for child rows, so a
new column needs no migration; the analytics loader turns them into typed records.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import Engine, delete, insert, select, update

from relinsights.config import TenantConfig
from relinsights.crm.client import ChangeTrackingExpired, DataverseClient, DataverseError
from relinsights.db.models import CrmCursor, CrmRecord, table_of

log = structlog.get_logger(__name__)
record_t, cursor_t = table_of(CrmRecord), table_of(CrmCursor)


@dataclass(frozen=True)
class MirroredSet:
    entity_set: str
    key: str
    select: tuple[str, ...]
    tracked: bool = True  # change tracking available
    filter: str | None = None  # only for untracked sets


ACTIVITY_SETS = ("phonecalls", "emails", "appointments")
SETS: tuple[MirroredSet, ...] = (
    MirroredSet(
        "systemusers",
        "systemuserid",
        ("systemuserid", "internalemailaddress", "domainname", "fullname", "_businessunitid_value", "isdisabled"),
    ),
    MirroredSet(
        "contacts",
        "contactid",
        (
            "contactid",
            "fullname",
            "emailaddress1",
            "emailaddress2",
            "emailaddress3",
            "_parentcustomerid_value",
            "statecode",
            "createdon",
            "modifiedon",
        ),
    ),
    MirroredSet(
        "accounts",
        "accountid",
        (
            "accountid",
            "name",
            "websiteurl",
            "emailaddress1",
            "industrycode",
            "numberofemployees",
            "_primarycontactid_value",
            "_ownerid_value",
            "statecode",
            "modifiedon",
        ),
    ),
    MirroredSet(
        "leads",
        "leadid",
        (
            "leadid",
            "fullname",
            "emailaddress1",
            "emailaddress2",
            "emailaddress3",
            "_ownerid_value",
            "statecode",
            "createdon",
            "modifiedon",
        ),
    ),
    MirroredSet(
        "opportunities",
        "opportunityid",
        (
            "opportunityid",
            "name",
            "_ownerid_value",
            "_parentaccountid_value",
            "_parentcontactid_value",
            "statecode",
            "createdon",
            "actualclosedate",
            "estimatedclosedate",
            "estimatedvalue",
            "actualvalue",
            "modifiedon",
        ),
    ),
    MirroredSet("teams", "teamid", ("teamid", "name", "teamtype", "_regardingobjectid_value")),
    MirroredSet(
        "connections",
        "connectionid",
        ("connectionid", "_record1id_value", "_record2id_value", "_record1roleid_value", "_record2roleid_value"),
    ),
    MirroredSet("connectionroles", "connectionroleid", ("connectionroleid", "name"), tracked=False),
    MirroredSet(
        "phonecalls",
        "activityid",
        (
            "activityid",
            "subject",
            "_regardingobjectid_value",
            "directioncode",
            "actualdurationminutes",
            "actualend",
            "scheduledend",
            "statecode",
            "phonenumber",
        ),
    ),
    MirroredSet(
        "emails",
        "activityid",
        ("activityid", "messageid", "directioncode", "senton", "_regardingobjectid_value", "statecode"),
    ),
    MirroredSet(
        "appointments",
        "activityid",
        (
            "activityid",
            "globalobjectid",
            "scheduledstart",
            "scheduledend",
            "isalldayevent",
            "_regardingobjectid_value",
            "statecode",
        ),
    ),
    MirroredSet("teammemberships", "teammembershipid", ("teammembershipid", "teamid", "systemuserid"), tracked=False),
)
PARTY_SELECT = ("activitypartyid", "_activityid_value", "_partyid_value", "addressused", "participationtypemask")
PARTY_CHUNK = 25  # activity ids per $filter: keeps the URL well under Dataverse's limits


@dataclass
class MirrorReport:
    tenant: str
    upserted: dict[str, int] = field(default_factory=dict)
    deleted: dict[str, int] = field(default_factory=dict)
    full_reads: list[str] = field(default_factory=list)
    parties: int = 0


class CrmMirror:
    def __init__(self, engine: Engine, tenant_pk: int, tenant_name: str, client: DataverseClient):
        self.engine = engine
        self.tenant_pk = tenant_pk
        self.client = client
        self.report = MirrorReport(tenant_name)
        self._log = log.bind(tenant=tenant_name)

    async def run(self) -> MirrorReport:
        for spec in SETS:
            changed = await (self._tracked(spec) if spec.tracked else self._full_untracked(spec))
            if spec.entity_set in ACTIVITY_SETS and changed:
                await self._parties(changed)
        return self.report

    # ---- change-tracked tables -----------------------------------------------------------------

    def _cursor(self, entity_set: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(
                select(cursor_t.c.delta_link).where(
                    cursor_t.c.tenant_pk == self.tenant_pk, cursor_t.c.entity_set == entity_set
                )
            ).scalar()

    async def _tracked(self, spec: MirroredSet) -> list[str]:
        link = self._cursor(spec.entity_set)
        full = link is None
        try:
            return await self._follow(spec, link, full)
        except ChangeTrackingExpired:
            self._log.warning("crm.change_tracking_expired", entity_set=spec.entity_set, action="full read")
            return await self._follow(spec, None, True)

    async def _follow(self, spec: MirroredSet, link: str | None, full: bool) -> list[str]:
        if full:
            self.report.full_reads.append(spec.entity_set)
        seen: set[str] = set()
        changed: list[str] = []
        async for page in self.client.pages(spec.entity_set, list(spec.select), track_changes=True, link=link):
            ids = self._store(spec, page.rows, page.deleted)
            seen.update(ids)
            changed += ids + page.deleted
            if page.delta_link:
                self._save_cursor(spec.entity_set, page.delta_link)
        if full:
            # A full read is the whole table: what it did not return is gone from Dataverse.
            gone = self._drop_unseen(spec.entity_set, seen)
            changed += gone
        return changed

    def _store(self, spec: MirroredSet, rows: Sequence[dict[str, Any]], deleted: Sequence[str]) -> list[str]:
        now = datetime.now(UTC)
        ids: list[str] = []
        with self.engine.begin() as conn:
            for row in rows:
                rid = str(row.get(spec.key) or "").lower()
                if not rid:
                    continue
                ids.append(rid)
                data = {k: v for k, v in row.items() if not k.startswith("@")}
                values = {
                    "data": json.dumps(data, sort_keys=True),
                    "parent_id": _parent(spec.entity_set, data),
                    "synced_at": now,
                }
                res = conn.execute(
                    update(record_t)
                    .where(
                        record_t.c.tenant_pk == self.tenant_pk,
                        record_t.c.entity_set == spec.entity_set,
                        record_t.c.record_id == rid,
                    )
                    .values(**values)
                )
                if not res.rowcount:
                    conn.execute(
                        insert(record_t).values(
                            tenant_pk=self.tenant_pk, entity_set=spec.entity_set, record_id=rid, **values
                        )
                    )
            if deleted:
                gone = [d.lower() for d in deleted]
                conn.execute(
                    delete(record_t).where(
                        record_t.c.tenant_pk == self.tenant_pk,
                        record_t.c.entity_set == spec.entity_set,
                        record_t.c.record_id.in_(gone),
                    )
                )
        self.report.upserted[spec.entity_set] = self.report.upserted.get(spec.entity_set, 0) + len(ids)
        self.report.deleted[spec.entity_set] = self.report.deleted.get(spec.entity_set, 0) + len(deleted)
        return ids

    def _drop_unseen(self, entity_set: str, seen: set[str]) -> list[str]:
        with self.engine.begin() as conn:
            have = set(
                conn.execute(
                    select(record_t.c.record_id).where(
                        record_t.c.tenant_pk == self.tenant_pk, record_t.c.entity_set == entity_set
                    )
                ).scalars()
            )
            gone = sorted(have - seen)
            for i in range(0, len(gone), 500):
                conn.execute(
                    delete(record_t).where(
                        record_t.c.tenant_pk == self.tenant_pk,
                        record_t.c.entity_set == entity_set,
                        record_t.c.record_id.in_(gone[i : i + 500]),
                    )
                )
        if gone:
            self.report.deleted[entity_set] = self.report.deleted.get(entity_set, 0) + len(gone)
        return gone

    def _save_cursor(self, entity_set: str, link: str) -> None:
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            res = conn.execute(
                update(cursor_t)
                .where(cursor_t.c.tenant_pk == self.tenant_pk, cursor_t.c.entity_set == entity_set)
                .values(delta_link=link, completed_at=now)
            )
            if not res.rowcount:
                conn.execute(
                    insert(cursor_t).values(
                        tenant_pk=self.tenant_pk, entity_set=entity_set, delta_link=link, completed_at=now
                    )
                )

    # ---- tables without change tracking --------------------------------------------------------

    async def _full_untracked(self, spec: MirroredSet) -> list[str]:
        seen: set[str] = set()
        async for page in self.client.pages(spec.entity_set, list(spec.select), filter=spec.filter):
            seen.update(self._store(spec, page.rows, []))
        self._drop_unseen(spec.entity_set, seen)
        self._save_cursor(spec.entity_set, "")
        return sorted(seen)

    async def _parties(self, activity_ids: list[str]) -> None:
        """Re-read the parties of changed activities (activityparty has no change tracking)."""
        spec = MirroredSet("activityparties", "activitypartyid", PARTY_SELECT, tracked=False)
        ids = sorted(set(activity_ids))
        for i in range(0, len(ids), PARTY_CHUNK):
            chunk = ids[i : i + PARTY_CHUNK]
            with self.engine.begin() as conn:
                conn.execute(
                    delete(record_t).where(
                        record_t.c.tenant_pk == self.tenant_pk,
                        record_t.c.entity_set == "activityparties",
                        record_t.c.parent_id.in_(chunk),
                    )
                )
            flt = " or ".join(f"_activityid_value eq {a}" for a in chunk)
            async for page in self.client.pages("activityparties", list(PARTY_SELECT), filter=flt):
                self.report.parties += len(self._store(spec, page.rows, []))


def _parent(entity_set: str, data: dict[str, Any]) -> str | None:
    if entity_set == "activityparties":
        value = data.get("_activityid_value")
    elif entity_set == "teammemberships":
        value = data.get("teamid")
    else:
        return None
    return str(value).lower() if value else None


def mirrored_rows(engine: Engine, tenant_pk: int, entity_set: str) -> list[dict[str, Any]]:
    """The mirrored rows of one table, as Dataverse returned them."""
    with engine.connect() as conn:
        return [
            json.loads(d)
            for d in conn.execute(
                select(record_t.c.data).where(record_t.c.tenant_pk == tenant_pk, record_t.c.entity_set == entity_set)
            ).scalars()
        ]


async def mirror_tenant(engine: Engine, tenant: TenantConfig, *, tokens: Any = None) -> MirrorReport:
    """One mirror round for a tenant; errors are kept on the tenant row (status shows them) and raised."""
    from relinsights.auth import TokenSource
    from relinsights.db.tenants import ensure_tenant

    row = ensure_tenant(engine, tenant)
    if not tenant.dataverse_url or not tenant.dataverse_token_scope:
        raise DataverseError(f"tenant {tenant.name} has no dataverse_url; set it to mirror the CRM", code="config")
    async with DataverseClient(tenant, tokens or TokenSource(tenant, tenant.dataverse_token_scope)) as client:
        report = await CrmMirror(engine, row.id or 0, tenant.name, client).run()
    log.info(
        "crm.mirrored",
        tenant=tenant.name,
        upserted=sum(report.upserted.values()),
        deleted=sum(report.deleted.values()),
        parties=report.parties,
        full=report.full_reads,
    )
    return report
