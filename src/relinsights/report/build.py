"""`relinsights report`: gather each tenant's latest KPIs and write the static HTML report.

Layout of the output directory: `index.html` (the tenants), and per tenant `<tenant>/index.html` (the
overview) and `<tenant>/<entity>-<record id>.html` (one page per record). Record pages are rendered in
worker processes (the charts are the cost), one per core.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from relinsights.analytics.timeutil import local_date, start_of_local_day
from relinsights.compute.store import latest_as_of, payloads_of, run_t, snapshot_t
from relinsights.compute.views import RecordHit, find_records, list_view, names_of, show_view
from relinsights.config import TenantConfig
from relinsights.report.markup import esc, link, page, table
from relinsights.report.overview import WEEKS, Overview, overview_body, weeks_until
from relinsights.report.record import record_body, title_of
from relinsights.status import mailbox_statuses


class ReportError(Exception):
    """Bad input to the report (a --record that names nothing): the message says what to do."""


@dataclass
class TenantReport:
    tenant: str
    directory: Path
    as_of: datetime | None
    pages: int = 0
    ranked: int = 0


@dataclass
class ReportResult:
    index: Path
    tenants: list[TenantReport] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def pages(self) -> int:
        return sum(t.pages for t in self.tenants)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-.") or "tenant"


def page_name(entity: str, record_id: str) -> str:
    return f"{entity}-{slug(record_id)}.html"


def _run_info(engine: Engine, tenant_pk: int, as_of: datetime) -> dict[str, Any] | None:
    c = run_t.c
    with engine.connect() as conn:
        row = conn.execute(
            select(c.mode, c.tier, c.accuracy, c.finished_at)
            .where(c.tenant_pk == tenant_pk, c.as_of == as_of)
            .order_by(c.id.desc())
            .limit(1)
        ).first()
    return dict(row._mapping) if row else None


def _snapshot_hits(engine: Engine, tenant_pk: int, as_of: datetime) -> list[RecordHit]:
    c = snapshot_t.c
    with engine.connect() as conn:
        refs = [
            (e, r)
            for e, r in conn.execute(
                select(c.entity, c.record_id)
                .where(c.tenant_pk == tenant_pk, c.as_of == as_of)
                .order_by(c.entity, c.record_id)
            )
        ]
    names = names_of(engine, tenant_pk, refs)
    return [RecordHit(e, r, names.get((e, r)), "snapshot") for e, r in refs]


def weekly_activity(engine: Engine, tenant: TenantConfig, as_of: datetime) -> Counter[tuple[date, str, str]]:
    """Completed activities linked to a CRM record, by tenant-local week, kind and direction."""
    # The whole activity pipeline and its column libraries: imported only when a report asks.
    import numpy as np
    import polars as pl

    from relinsights.analytics.columnar import completed
    from relinsights.analytics.frames import DIRECTION, KIND, us
    from relinsights.compute.job import prepare

    p = prepare(engine, tenant, as_of)
    zone = p.settings.zone
    weeks = weeks_until(local_date(as_of, zone))
    # A time's week is a bisection between the weeks' first instants (zoneinfo's, as the KPIs' days are).
    starts = pl.Series([us(start_of_local_day(w, zone)) for w in (*weeks, weeks[-1] + timedelta(weeks=1))])
    pairs = [np.asarray(p.links.pairs(ref), dtype=np.int64)[0::2] for ref in p.links]
    linked = np.unique(np.concatenate(pairs)) if pairs else np.zeros(0, np.int64)
    acts = p.frames.acts[linked].filter(completed(as_of))
    week = starts.search_sorted(acts.get_column("t"), side="right").cast(pl.Int64) - 1
    counts = (
        acts.with_columns(week=week)
        .filter(pl.col("week").is_between(0, len(weeks) - 1))
        .group_by("week", "kind", "dir")
        .len()
    )
    kinds, directions = list(KIND), list(DIRECTION)
    return Counter({(weeks[w], str(kinds[k]), str(directions[d])): n for w, k, d, n in counts.iter_rows()})


def gather_overview(engine: Engine, tenant: TenantConfig, tenant_pk: int, hits: Sequence[RecordHit]) -> Overview:
    as_of = latest_as_of(engine, tenant_pk)
    boxes = mailbox_statuses(engine, tenant.name)
    if as_of is None:
        return Overview(tenant.name, None, None, None, [], [], {}, mailboxes=boxes)
    ranked = list_view(engine, tenant, tenant_pk)
    scored = {(r["entity"], r["id"]) for r in ranked}
    declining = [r["id"] for r in ranked if r["health_trend"] == "Declining"]
    return Overview(
        tenant=tenant.name,
        as_of=as_of,
        as_of_day=local_date(as_of, tenant.zone),
        run=_run_info(engine, tenant_pk, as_of),
        ranked=ranked,
        unscored=[(h.entity, h.record_id, h.name) for h in hits if (h.entity, h.record_id) not in scored],
        payloads=payloads_of(engine, tenant_pk, as_of, declining),
        weekly=weekly_activity(engine, tenant, as_of),
        mailboxes=boxes,
    )


# What every record page links to: set once per worker process, not sent along with each record.
_shared: dict[str, Any] = {}


def _share(names: dict[str, str | None], pages: set[tuple[str, str]]) -> None:
    _shared.update(names=names, pages=pages)


def _href(entity: str, rid: str) -> str | None:
    return page_name(entity, rid) if (entity, rid) in _shared["pages"] else None


def _render_record(view: dict[str, Any]) -> tuple[str, str]:
    rec = view["record"]
    body = record_body(view, _shared["names"], _href)
    nav = [("index.html", f"{view['tenant']} overview"), ("../index.html", "all tenants")]
    return page_name(rec["entity"], rec["id"]), page(title_of(view), body, nav=nav)


def _render_all(
    views: list[dict[str, Any]], names: dict[str, str | None], pages: set[tuple[str, str]], jobs: int
) -> Iterator[tuple[str, str]]:
    """The record pages, rendered in `jobs` worker processes (in this one for a handful of pages)."""
    if jobs <= 1 or len(views) < 8:
        yield from map(_render_record, views)
        return
    # spawn, not fork: a forked child would inherit the chart engine's threads from this process, dead.
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=spawn, initializer=_share, initargs=(names, pages)) as pool:
        yield from pool.map(_render_record, views, chunksize=max(1, min(16, len(views) // (4 * jobs))))


def resolve_records(
    engine: Engine, tenants: Sequence[tuple[TenantConfig, int]], queries: Sequence[str]
) -> dict[str, list[RecordHit]]:
    """Tenant name -> the records the queries name; a query naming nothing in any tenant is an error."""
    found: dict[str, list[RecordHit]] = {t.name: [] for t, _ in tenants}
    missing = []
    for q in queries:
        hits = [(t.name, h) for t, pk in tenants for h in find_records(engine, t, pk, q)]
        if not hits:
            missing.append(q)
        for name, h in hits:
            if h not in found[name]:
                found[name].append(h)
    if missing:
        raise ReportError(
            f"--record {', '.join(repr(q) for q in missing)}: no contact, lead, account or opportunity matches; "
            "give a contact or lead address, an account domain, or a record id (see `relinsights kpis list`)"
        )
    return found


def write_tenant(
    engine: Engine, tenant: TenantConfig, tenant_pk: int, out: Path, hits: Sequence[RecordHit] | None, jobs: int
) -> TenantReport:
    directory = out / slug(tenant.name)
    directory.mkdir(parents=True, exist_ok=True)
    as_of = latest_as_of(engine, tenant_pk)
    everyone = _snapshot_hits(engine, tenant_pk, as_of) if as_of else []
    chosen = list(everyone if hits is None else hits) if as_of else []
    views = [v for h in chosen if (v := show_view(engine, tenant, tenant_pk, h)) is not None]
    pages = {(v["record"]["entity"], v["record"]["id"]) for v in views}
    won = [m["opportunity_id"] for v in views for m in (v.get("similar_won") or {}).get("matches", [])]
    names = {rid: n for (_e, rid), n in names_of(engine, tenant_pk, [("opportunity", r) for r in won]).items()}
    _share(names, pages)
    for name, html in _render_all(views, names, pages, jobs):
        (directory / name).write_text(html, encoding="utf-8")
    overview = gather_overview(engine, tenant, tenant_pk, everyone)
    nav = [("../index.html", "all tenants")]
    (directory / "index.html").write_text(
        page(f"{tenant.name}: relationships", overview_body(overview, _href), nav), encoding="utf-8"
    )
    return TenantReport(tenant.name, directory, as_of, pages=len(views), ranked=len(overview.ranked))


def write_report(
    engine: Engine,
    tenants: Sequence[tuple[TenantConfig, int]],
    out: Path,
    records: Sequence[str] = (),
    jobs: int | None = None,
) -> ReportResult:
    """Write the report of `tenants` under `out`; `records` (queries as `kpis show` takes) limits the pages."""
    started = time.monotonic()
    chosen = resolve_records(engine, tenants, records) if records else None
    jobs = jobs if jobs is not None else (os.cpu_count() or 1)
    out.mkdir(parents=True, exist_ok=True)
    result = ReportResult(out / "index.html")
    for t, pk in tenants:
        result.tenants.append(write_tenant(engine, t, pk, out, chosen[t.name] if chosen else None, jobs))
    rows = [
        [
            link(f"{slug(r.tenant)}/index.html", r.tenant),
            r.as_of.isoformat() if r.as_of else "not computed yet",
            str(r.ranked),
            str(r.pages),
        ]
        for r in result.tenants
    ]
    body = (
        "<h1>relinsights relationship report</h1>"
        f"<p class='meta'>written {esc(datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z'))}; "
        f"activity per week covers {WEEKS} weeks</p>"
        + table(["tenant", "KPIs as of", "relationships with a health score", "record pages"], rows, "tenants")
    )
    result.index.write_text(page("relinsights report", body), encoding="utf-8")
    result.seconds = time.monotonic() - started
    return result
