"""The KPI job of one tenant: load -> build activities -> match -> KPIs per record -> dated snapshots.

`compute_tenant` runs it as of T (default now). Incremental by default: a record whose fingerprint is
unchanged since the previous run and whose values time cannot have moved keeps its previous values,
copied forward to T (the rule and why it equals a full computation: `fingerprint.py`). `full=True`
recomputes every record. Loading, activity building and matching always run over the whole window:
they are what tells which records changed.
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import orjson
import structlog
from sqlalchemy import Engine

from relinsights.analytics import (
    Entity,
    MatchResult,
    OpportunityState,
    RecordIndex,
    RecordKpis,
    RecordRef,
    Settings,
    Tier,
)
from relinsights.analytics.activity_frames import build_activity_frames
from relinsights.analytics.activity_table import ActivityTable
from relinsights.analytics.columnar import compute_kpis
from relinsights.analytics.frames import ActivityFrames, FrameActivities
from relinsights.analytics.mail_frames import MailRows
from relinsights.analytics.match_frames import match_frames
from relinsights.analytics.matching import LinkTable
from relinsights.analytics.meeting_frames import EventRows
from relinsights.analytics.spillfile import SpilledBytes
from relinsights.analytics.timeutil import as_utc
from relinsights.collector import collector_paused
from relinsights.compute.fingerprint import settings_key, stable_until
from relinsights.compute.freed_memory import FreedMemory
from relinsights.compute.load import TenantInputs, load_inputs
from relinsights.compute.payload import kpi_payload
from relinsights.compute.report import ComputeReport
from relinsights.compute.similar import compute_similar, similar_due, similar_json
from relinsights.compute.store import (
    RunRecord,
    RunWriter,
    SnapshotRow,
    last_similar_as_of,
    payloads_of,
    previous_snapshots,
    write_similar,
)
from relinsights.config import ServiceConfig, TenantConfig
from relinsights.db.tenants import ensure_tenant, tenant_enabled

log = structlog.get_logger(__name__)
# A batch of records whose KPIs are computed together: up to this many records and links. The links bound
# the column engine's tables (an account can have a hundred times a contact's); the records, what a batch
# holds in objects.
RECORD_BATCH, LINK_BATCH = 2000, 250_000
KPI_THREADS = 2
KEEP_FREED_BELOW_MIB = ServiceConfig().compute_keep_freed_below_mib
COMPLETE, PARTIAL = "Complete", "Partial"


@dataclass
class Prepared:
    """One tenant's activities and links as of T: everything but the per-record KPIs."""

    tenant_pk: int
    as_of: datetime
    settings: Settings
    inputs: TenantInputs
    frames: ActivityFrames
    skipped: dict[str, int]  # source rows that made no activity, by reason
    match: MatchResult
    health_refs: set[RecordRef]
    # The computed payloads, until the write (store.SnapshotRow says why in a file).
    payloads: SpilledBytes = field(default_factory=SpilledBytes)
    frames_released: bool = False  # (release_frames: fingerprints are made before the snapshots)

    @property
    def accuracy(self) -> str:
        return PARTIAL if self.inputs.failed_mailboxes else COMPLETE

    @cached_property
    def links(self) -> LinkTable:
        links = self.match.links
        assert isinstance(links, LinkTable), "match_activities gives a LinkTable"
        return links

    @cached_property
    def table(self) -> ActivityTable:
        """Every activity as columns, built once: for the fingerprints and the KPIs."""
        return self._table(release_parts=False)

    def _table(self, release_parts: bool) -> ActivityTable:
        return ActivityTable(
            self.frames,
            self.as_of,
            self.settings,
            identities=self.match.identities,
            acts=self.links.activities,
            release_parts=release_parts,
        )

    def release_frames(self) -> None:
        """Build the activity table, then let the activity frames go (the KPI job, for memory: what the
        fingerprints and the KPIs read of them, the table holds; the participants as soon as it holds its
        own). Activities are not to be asked for after, nor fingerprints after the snapshots (which let the
        table's own participant rows go once their look-ups are built)."""
        # (built here, into the cached property's place, so that the participants go as it is built)
        if "table" not in self.__dict__:
            self.__dict__["table"] = self._table(release_parts=True)
        table = self.table
        self.frames, self.frames_released = ActivityFrames.empty(), True
        if isinstance(table.acts, FrameActivities):
            table.acts.release()

    def fingerprints(self) -> list[tuple[RecordRef, str]]:
        """Every linked record, sorted, with its fingerprint."""
        refs = sorted(self.links)
        prints = self.table.fingerprints(self.links, refs, self.health_refs, settings_key(self.settings))
        return list(zip(refs, prints, strict=True))

    def snapshots(self, wanted: Sequence[tuple[RecordRef, str]]) -> Iterator[SnapshotRow]:
        """Compute these records' KPIs as of T (ref, fingerprint), a batch of records at a time."""
        table = self.table
        # (after release_frames, the KPI job's: its fingerprints are made, and the participant rows can go)
        table.warm(self.links, release_parts=self.frames_released)

        def kpis_of(batch: Sequence[tuple[RecordRef, str]]) -> list[RecordKpis]:
            refs = [ref for ref, _ in batch]
            return list(
                compute_kpis(
                    self.links,
                    self.as_of,
                    self.settings,
                    identities=self.match.identities,
                    health_for=self.health_refs,
                    refs=refs,
                    table=table,
                )
            )

        # Most of a batch's time is polars, which runs without the interpreter lock: batches on two threads
        # (and this one making the payloads) keep two cores busy. KPI_THREADS batches run while this thread
        # makes the payloads of the one before them (refilled before, not after: one thread sat idle while
        # they were made, 0.4-0.7 s of the KPI step at 2,000,000 activities in most alternating runs).
        with ThreadPoolExecutor(KPI_THREADS, thread_name_prefix="kpis") as pool:
            pending: deque[tuple[dict[RecordRef, str], Future[list[RecordKpis]]]] = deque()
            batches = iter(self._batches(wanted))

            def refill() -> None:
                while len(pending) < KPI_THREADS and (batch := next(batches, None)) is not None:
                    pending.append((dict(batch), pool.submit(kpis_of, batch)))

            refill()
            while pending:
                fingerprints, future = pending.popleft()
                done = future.result()
                refill()
                for k in done:
                    yield self._row(k, fingerprints[k.record])

    def _batches(self, wanted: Sequence[tuple[RecordRef, str]]) -> Iterator[Sequence[tuple[RecordRef, str]]]:
        start = links = 0
        for i, (ref, _) in enumerate(wanted):
            links += len(self.links.pairs(ref)) // 2
            if i + 1 - start >= RECORD_BATCH or links >= LINK_BATCH:
                yield wanted[start : i + 1]
                start, links = i + 1, 0
        if start < len(wanted):
            yield wanted[start:]

    def _row(self, k: RecordKpis, fingerprint: str) -> SnapshotRow:
        return SnapshotRow(
            entity=str(k.record.entity),
            record_id=k.record.id,
            payload_at=self.payloads.append(kpi_payload(k)),
            fingerprint=fingerprint,
            stable_until=stable_until(
                lambda: self.table.moments(self.links.pairs(k.record)[0::2]), self.as_of, self.settings, k.health
            ),
            activities=k.counts.total,
            last_interaction_at=k.last_interaction.time if k.last_interaction else None,
            health_score=k.health.score if k.health else None,
            health_state=str(k.health.state) if k.health else None,
            health_trend=str(k.health.trend) if k.health else None,
            payloads=self.payloads,
        )


def normalise_as_of(as_of: datetime | None) -> datetime:
    return as_utc(as_of) if as_of is not None else datetime.now(UTC).replace(microsecond=0)


def prepare(
    engine: Engine,
    tenant: TenantConfig,
    as_of: datetime,
    keep_rows: bool = True,
    step: Callable[[str], object] = lambda _: None,
) -> Prepared:
    """Load the tenant's rows, build its activities and link them to its CRM records.

    keep_rows=False drops the loaded source rows once the activities are built and keeps the activity keys in a
    file (the KPI job, for memory: ActivityFrames.combine's spill_keys);
    `step` is told each step's name as it ends (scripts/bench_phases.py times them)."""
    row = ensure_tenant(engine, tenant)
    assert row.id is not None
    tier = Tier.ENHANCED if tenant_enabled(row, tenant) else Tier.BASIC
    settings = Settings.for_tenant(tenant)
    verified = [d for d in json.loads(row.verified_domains or "[]") if isinstance(d, str)]
    inputs = load_inputs(engine, tenant, row.id, verified, as_of, tier)
    step("read")
    mail, meetings = inputs.messages, inputs.events  # the builders take the rows out of these holders
    if keep_rows:
        mail, meetings = MailRows(mail.messages, mail.recipients), EventRows(meetings.events, meetings.attendees)
    frames, skipped = build_activity_frames(
        rules=inputs.rules,
        tier=tier,
        mail=mail,
        meetings=meetings,
        crm_emails=inputs.crm_emails,
        crm_appointments=inputs.crm_appointments,
        phone_calls=inputs.phone_calls,
        settle=True,  # the ids that only made threads, no longer held
        spill_keys=not keep_rows,
        graph_ids=inputs.graph_ids,
    )
    if not keep_rows:
        inputs.release_rows()
    frames = frames.compacted()
    step("build")
    index = RecordIndex(inputs.records, inputs.rules, kpi=settings.kpi, zone=settings.zone)
    match = match_frames(frames, index, FrameActivities(frames))
    step("match")
    return Prepared(row.id, as_of, settings, inputs, frames, skipped, match, inputs.records.health_refs())


def compute_payloads(engine: Engine, tenant: TenantConfig, as_of: datetime) -> dict[RecordRef, dict[str, Any]]:
    """Every record's payload as of T, computed in full and stored nowhere (checks and tests)."""
    p = prepare(engine, tenant, as_of)
    wanted = p.fingerprints()
    return {RecordRef(Entity(row.entity), row.record_id): orjson.loads(row.payload) for row in p.snapshots(wanted)}


# A run holds millions of activities, links and rows alive until it ends, and makes no cycles: the collector
# only walked them again and again (a quarter of a run's time in scripts/bench_compute.py).
@collector_paused()
def compute_tenant(
    engine: Engine,
    tenant: TenantConfig,
    as_of: datetime | None = None,
    full: bool = False,
    keep_freed_below_mib: int = KEEP_FREED_BELOW_MIB,
) -> ComputeReport:
    """Compute and store the KPI snapshots of every linked record of `tenant` as of `as_of` (default now).

    From the read on, memory the run frees is kept for reuse while its resident size is under
    `keep_freed_below_mib` (compute/freed_memory.py; the readers' processes run during the read)."""
    with FreedMemory(keep_freed_below_mib) as freed:
        return _compute_tenant(engine, tenant, as_of, full, freed.keep_after("read"))


def _compute_tenant(
    engine: Engine, tenant: TenantConfig, as_of: datetime | None, full: bool, step: Callable[[str], object]
) -> ComputeReport:
    started_wall, started = datetime.now(UTC), time.monotonic()
    as_of = normalise_as_of(as_of)
    p = prepare(engine, tenant, as_of, keep_rows=False, step=step)
    report = ComputeReport(
        tenant=tenant.name,
        as_of=as_of,
        mode="full" if full else "incremental",
        tier=str(p.inputs.tier),
        accuracy=p.accuracy,
        source_rows=p.inputs.source_rows,
        activities=len(p.frames),
        skipped_rows=p.skipped,
        links=p.match.link_count,
        records=len(p.match.links),
        ambiguous_domains=[
            {"domain": a.domain, "account_ids": list(a.account_ids), "activities": a.activities}
            for a in p.match.ambiguous_domains
        ],
        failed_mailboxes=list(p.inputs.failed_mailboxes),
    )
    p.release_frames()
    previous = {} if full else previous_snapshots(engine, p.tenant_pk, as_of)
    wanted: list[tuple[RecordRef, str]] = []
    reused: list[int] = []
    why: Counter[str] = Counter()
    for ref, fingerprint in p.fingerprints():
        prev = previous.get((str(ref.entity), ref.id))
        if full or prev is None:
            why["full" if full else "new"] += 1
        elif prev.fingerprint != fingerprint:
            why["inputs"] += 1
        elif not prev.still_valid(as_of):
            why["time"] += 1
        else:
            reused.append(prev.id)
            continue
        wanted.append((ref, fingerprint))
    with RunWriter(engine, p.tenant_pk, as_of, started_wall, report.accuracy) as writer:
        for row in p.snapshots(wanted):
            writer.add(row)
        report.computed, report.reused, report.recomputed = writer.count, len(reused), dict(sorted(why.items()))
        run = RunRecord(
            finished_at=datetime.now(UTC),
            mode=report.mode,
            tier=report.tier,
            activities=report.activities,
            links=report.links,
            records=report.records,
            details={
                "skipped_rows": report.skipped_rows,
                "recomputed": report.recomputed,
                "ambiguous_domains": report.ambiguous_domains,
                "failed_mailboxes": report.failed_mailboxes,
            },
        )
        report.run_id = writer.finish(run, reused)
    if similar_due(last_similar_as_of(engine, p.tenant_pk), as_of):
        report.similar_won = _refresh_similar(engine, p)
    report.seconds = time.monotonic() - started
    for a in report.ambiguous_domains:
        log.warning(
            "compute.ambiguous_domain",
            tenant=tenant.name,
            domain=a["domain"],
            accounts=a["account_ids"],
            fix="map the domain to one account in kpi.account_domains",
        )
    log.info("compute.done", **{k: v for k, v in report.to_json().items() if k not in ("ambiguous_domains",)})
    return report


def _refresh_similar(engine: Engine, p: Prepared) -> int:
    won = [o.id for o in p.inputs.records.opportunities if o.state is OpportunityState.WON]
    payloads = payloads_of(engine, p.tenant_pk, p.as_of, won)
    results = compute_similar(
        p.inputs.records,
        p.inputs.users,
        {rid: payload for (entity, rid), payload in payloads.items() if entity == "opportunity"},
        p.as_of,
        p.settings.kpi.similar_won_count,
    )
    return write_similar(engine, p.tenant_pk, p.as_of, datetime.now(UTC), [similar_json(r) for r in results])
