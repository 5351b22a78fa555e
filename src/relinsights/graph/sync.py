"""One sync round for a tenant: directory and scope, then every in-scope mailbox, each with a visible status.

Failures are kept where an admin sees them: a credential problem on the tenant row, a mailbox problem
on the mailbox row (status, last error with its fix, error count). One tenant or mailbox failing never
stops the others.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Engine, delete, update
from sqlmodel import Session
from sqlmodel import select as sm_select

from relinsights.auth import CredentialError, TokenSource
from relinsights.config import TenantConfig
from relinsights.db.models import Mailbox, Tenant, table_of
from relinsights.db.tenants import ensure_tenant, tenant_enabled
from relinsights.graph.client import (
    GraphClient,
    GraphError,
    MailboxNotEnabled,
    PermissionDenied,
    Sleep,
    ThrottledTooLong,
)
from relinsights.graph.directory import DirectoryUser, resolve_scope, verified_domains
from relinsights.graph.mailbox_sync import MailboxSync, Stopping
from relinsights.graph.store import cursor_t, event_t, folder_t, message_t
from relinsights.scheduling.leases import Leases

log = structlog.get_logger(__name__)

ProgressFactory = Callable[[Mailbox], Callable[[int], None]]


@dataclass
class TenantSyncReport:
    tenant: str
    status: str = "ok"
    error: str | None = None
    mailboxes: dict[str, str] = field(default_factory=dict)  # address -> status
    messages_added: int = 0
    messages_removed: int = 0
    events_added: int = 0
    resyncs: int = 0
    requests: int = 0
    throttled: int = 0

    @property
    def failed(self) -> list[str]:
        return [a for a, s in self.mailboxes.items() if s == "error"]


def _now() -> datetime:
    return datetime.now(UTC)


def set_tenant_status(engine: Engine, tenant_pk: int, status: str, error: str | None = None) -> None:
    values: dict[str, Any] = {"status": status}
    if error:
        values.update(last_error=error, last_error_at=_now())
    else:
        values.update(last_success_at=_now())
    with engine.begin() as conn:
        conn.execute(update(table_of(Tenant)).where(table_of(Tenant).c.id == tenant_pk).values(**values))


def set_mailbox_status(
    engine: Engine, mailbox_pk: int, status: str, detail: str | None = None, *, error: bool = False
) -> None:
    mt = table_of(Mailbox)
    values: dict[str, Any] = {"status": status, "status_detail": detail}
    now = _now()
    if status == "syncing":
        values["last_attempt_at"] = now
    elif error:
        values.update(last_error=detail, last_error_at=now, error_count=mt.c.error_count + 1)
    elif status == "ok":
        values.update(last_success_at=now, error_count=0)
    with engine.begin() as conn:
        conn.execute(update(mt).where(mt.c.id == mailbox_pk).values(**values))


def purge_mailbox_data(engine: Engine, mailbox_pk: int) -> None:
    """An opted-out user's synced mail and calendar go at once (privacy); the row stays to show why."""
    with engine.begin() as conn:
        for t in (message_t, event_t, cursor_t, folder_t):
            conn.execute(delete(t).where(t.c.mailbox_pk == mailbox_pk))


def upsert_mailboxes(
    engine: Engine, tenant_pk: int, in_scope: list[DirectoryUser], excluded: list[DirectoryUser]
) -> list[Mailbox]:
    """Record the scope: in-scope users become (or stay) mailboxes; the rest are marked out of scope."""
    keep_ids = {u.user_id for u in in_scope}
    with Session(engine, expire_on_commit=False) as s:
        existing = {m.user_id: m for m in s.exec(sm_select(Mailbox).where(Mailbox.tenant_pk == tenant_pk))}
        for u in in_scope:
            m = existing.get(u.user_id)
            address = u.address or (u.user_principal_name or u.user_id).lower()
            if m is None:
                m = Mailbox(tenant_pk=tenant_pk, user_id=u.user_id, address=address)
                existing[u.user_id] = m
            m.address = address
            m.user_principal_name = u.user_principal_name
            m.display_name = u.display_name
            m.aliases = json.dumps(sorted(u.all_addresses))
            if not m.in_scope or m.status == "out_of_scope":
                m.status = "pending"
            m.in_scope = True
            s.add(m)
        opted_out = {u.user_id for u in excluded}
        to_purge = []
        for uid, m in existing.items():
            if uid not in keep_ids and m.in_scope:
                m.in_scope = False
                m.status = "out_of_scope"
                m.status_detail = "opted out" if uid in opted_out else "no longer in the configured scope"
                s.add(m)
                if uid in opted_out and m.id is not None:
                    to_purge.append(m.id)
        s.commit()
        rows = [m for m in existing.values() if m.in_scope]
        for m in rows:
            s.refresh(m)
    for pk in to_purge:
        purge_mailbox_data(engine, pk)
    return rows


async def sync_tenant(
    engine: Engine,
    tenant: TenantConfig,
    *,
    mailbox_filter: str | None = None,
    progress: ProgressFactory | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    sleep: Sleep = asyncio.sleep,
    now: Callable[[], datetime] = _now,
    tokens: Any = None,
    leases: Leases | None = None,
    lease_ttl: timedelta = timedelta(minutes=30),
) -> TenantSyncReport:
    """One round for a tenant. With `leases`, each mailbox is synced only by the daemon that claims it."""
    report = TenantSyncReport(tenant=tenant.name)
    tlog = log.bind(tenant=tenant.name)
    row = ensure_tenant(engine, tenant)
    assert row.id is not None
    if not tenant_enabled(row, tenant):
        report.status = "disabled"
        return report
    client = GraphClient(tenant, tokens or TokenSource(tenant, tenant.graph_token_scope), sleep=sleep)
    try:
        try:
            domains = await verified_domains(client)
            with engine.begin() as conn:
                tt = table_of(Tenant)
                conn.execute(update(tt).where(tt.c.id == row.id).values(verified_domains=json.dumps(domains)))
        except PermissionDenied:
            tlog.warning("sync.domains_unreadable", fix="grant Domain.Read.All; using internal_domains from the config")
        scope = await resolve_scope(client, tenant)
        for addr in scope.unknown:
            tlog.warning(
                "sync.scope_unknown_mailbox", address=addr, fix="no user has this address; fix scope.mailboxes"
            )
        mailboxes = upsert_mailboxes(engine, row.id, scope.in_scope, scope.excluded)
        if mailbox_filter:
            wanted = mailbox_filter.strip().lower()
            mailboxes = [m for m in mailboxes if m.address == wanted or wanted in json.loads(m.aliases)]
            if not mailboxes:
                raise GraphError(f"mailbox {mailbox_filter} is not in the sync scope of tenant {tenant.name}")
        sem = asyncio.Semaphore(tenant.sync.max_parallel_mailboxes)

        async def one(mb: Mailbox) -> None:
            async with sem:
                if should_stop():
                    return
                unit = f"sync:{tenant.name}:{mb.user_id}"
                if leases is None:
                    report.mailboxes[mb.address] = await _sync_one(
                        engine, client, tenant, mb, report, progress, should_stop, now
                    )
                    return
                if not await asyncio.to_thread(leases.claim, unit, lease_ttl):
                    return  # another daemon has it, or it is backing off after a failure
                log.info("sync.mailbox_claimed", tenant=tenant.name, mailbox=mb.address, owner=leases.owner)
                keeper = asyncio.create_task(_keep_lease(leases, unit, lease_ttl))
                try:
                    status = await _sync_one(engine, client, tenant, mb, report, progress, should_stop, now)
                finally:
                    keeper.cancel()
                report.mailboxes[mb.address] = status
                failed = status in ("error", "throttled")
                # Logged before the release (and the claim after the claim), so the log's intervals of
                # different daemons never overlap when the leases did not.
                log.info("sync.mailbox_released", tenant=tenant.name, mailbox=mb.address, owner=leases.owner)
                await asyncio.to_thread(leases.release, unit, f"mailbox {status}" if failed else None)

        await asyncio.gather(*(one(m) for m in mailboxes))
    except CredentialError as exc:
        report.status, report.error = "error", str(exc)
        set_tenant_status(engine, row.id, "error", str(exc))
        tlog.error("sync.tenant_failed", error=str(exc))
        return report
    except GraphError as exc:
        msg = f"{exc}; {exc.fix}"
        report.status, report.error = "error", msg
        set_tenant_status(engine, row.id, "error", msg)
        tlog.error("sync.tenant_failed", error=msg)
        return report
    finally:
        report.requests, report.throttled = client.requests_sent, client.throttled
        await client.aclose()
    if report.failed and len(report.failed) == len(report.mailboxes):
        report.status = "error"
        set_tenant_status(
            engine, row.id, "error", f"all {len(report.failed)} mailboxes failed; see `relinsights status`"
        )
    else:
        set_tenant_status(engine, row.id, "ok")
    return report


async def _keep_lease(leases: Leases, unit: str, ttl: timedelta) -> None:
    """Renew a held lease while its work runs, so a long first sync is not taken over by another daemon."""
    while True:
        await asyncio.sleep(ttl.total_seconds() / 3)
        await asyncio.to_thread(leases.renew, unit, ttl)


async def _sync_one(
    engine: Engine,
    client: GraphClient,
    tenant: TenantConfig,
    mb: Mailbox,
    report: TenantSyncReport,
    progress: ProgressFactory | None,
    should_stop: Callable[[], bool],
    now: Callable[[], datetime],
) -> str:
    assert mb.id is not None
    mlog = log.bind(tenant=tenant.name, mailbox=mb.address)
    set_mailbox_status(engine, mb.id, "syncing")
    job = MailboxSync(
        client,
        engine,
        tenant,
        mb,
        on_progress=progress(mb) if progress else (lambda n: None),
        should_stop=should_stop,
        now=now,
    )
    try:
        res = await job.run()
    except MailboxNotEnabled as exc:
        set_mailbox_status(engine, mb.id, "no_mailbox", f"{exc.fix}")
        mlog.info("sync.no_mailbox")
        return "no_mailbox"
    except ThrottledTooLong as exc:
        set_mailbox_status(engine, mb.id, "throttled", f"{exc}; {exc.fix}")
        mlog.warning("sync.throttled", detail=str(exc))
        return "throttled"
    except Stopping:
        set_mailbox_status(engine, mb.id, "pending", "stopped mid-round; resumes from the saved cursor")
        return "pending"
    except (GraphError, CredentialError) as exc:
        detail = f"{exc}; {exc.fix}"
        set_mailbox_status(engine, mb.id, "error", detail, error=True)
        mlog.error("sync.mailbox_failed", error=detail)
        return "error"
    except Exception as exc:  # a bug must not take the other mailboxes down with it
        detail = f"unexpected {type(exc).__name__}: {exc}"
        set_mailbox_status(engine, mb.id, "error", detail, error=True)
        mlog.exception("sync.mailbox_crashed")
        return "error"
    finally:
        report.messages_added += job.result.messages_added
        report.messages_removed += job.result.messages_removed
        report.events_added += job.result.events_added
        report.resyncs += job.result.resyncs
    problems = [*job.result.failed_folders, *([job.result.calendar_error] if job.result.calendar_error else [])]
    if problems:
        set_mailbox_status(engine, mb.id, "error", "; ".join(problems)[:4000], error=True)
        mlog.error("sync.mailbox_partial", problems=problems[:5])
        return "error"
    detail = f"{res.folders_synced} folders" + (f", {res.problems} item problems logged" if res.problems else "")
    set_mailbox_status(engine, mb.id, "ok", detail)
    mlog.info(
        "sync.mailbox_done",
        added=res.messages_added,
        updated=res.messages_updated,
        removed=res.messages_removed,
        events=res.events_added,
        resyncs=res.resyncs,
    )
    return "ok"
