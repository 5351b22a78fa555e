"""The daemon's loopback HTTP endpoint: `/healthz` and Prometheus `/metrics`.

Counters and histograms are updated by the jobs; per-mailbox gauges (sync lag, status) are read from
the database at scrape time, so every replica reports the same truth about the shared database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from relinsights.status import mailbox_statuses


class Metrics:
    def __init__(self, engine: Engine):
        self.registry = CollectorRegistry()
        self.requests = Counter("relinsights_requests", "Requests sent", ["service", "tenant"], registry=self.registry)
        self.throttled = Counter(
            "relinsights_throttled", "Requests answered 429", ["service", "tenant"], registry=self.registry
        )
        self.job_seconds = Histogram(
            "relinsights_job_duration_seconds",
            "Job durations",
            ["job", "tenant"],
            registry=self.registry,
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
        )
        self.job_failures = Counter(
            "relinsights_job_failures", "Jobs that failed", ["job", "tenant"], registry=self.registry
        )
        self.rows_written = Counter(
            "relinsights_rows_written", "Rows written to Dataverse", ["tenant", "table"], registry=self.registry
        )
        self.registry.register(_MailboxCollector(engine))


class _MailboxCollector(Collector):
    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "relinsights_sync_lag_seconds",
            "Seconds since the mailbox's oldest delta stream last completed a round",
            labels=["tenant", "mailbox"],
        )
        by_status = GaugeMetricFamily("relinsights_mailboxes", "Mailboxes by sync status", labels=["tenant", "status"])
        counts: dict[tuple[str, str], int] = {}
        for st in mailbox_statuses(self.engine):
            if st.cursor_age_s is not None:
                lag.add_metric([st.tenant, st.mailbox], st.cursor_age_s)
            counts[(st.tenant, st.status)] = counts.get((st.tenant, st.status), 0) + 1
        for (tenant, status), n in sorted(counts.items()):
            by_status.add_metric([tenant, status], n)
        yield lag
        yield by_status


def http_app(engine: Engine, metrics: Metrics, last_beat: Callable[[], float], max_silence: float) -> Starlette:
    """/healthz: 200 while the event loop beats and the database answers; 503 with the reason otherwise."""

    async def healthz(_request: Request) -> Response:
        silence = time.monotonic() - last_beat()
        problems = []
        if silence > max_silence:
            problems.append(f"event loop silent for {silence:.0f}s")
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:  # the answer is the failure itself
            problems.append(f"database: {type(exc).__name__}")
        body = {"status": "fail" if problems else "ok", "problems": problems, "time": datetime.now(UTC).isoformat()}
        return JSONResponse(body, status_code=503 if problems else 200)

    async def prometheus(_request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/healthz", healthz), Route("/metrics", prometheus)])
