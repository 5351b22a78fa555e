"""The whole pipeline against the sandbox: Graph sync, CRM mirror, KPI computation, `kpis show`.

The generator plants relationships of known kinds (generator.PROFILES): healthy customers answer most of
our emails in about 4 hours, one-sided ones rarely answer, cooling and dormant ones went quiet. The KPIs
must say so.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from relinsights.cli import app
from relinsights.compute import compute_payloads, compute_tenant, job, prepare
from relinsights.compute.store import payloads_of
from relinsights.config import TenantConfig, load_config
from relinsights.crm.mirror import mirror_tenant
from relinsights.db.tenants import ensure_tenant
from relinsights.graph.sync import sync_tenant
from relinsights.sandbox.generator import NOISE_SENDERS, PROFILES
from relinsights.sandbox.server import SandboxServer

NOISE_DOMAINS = {address.split("@")[1] for _, address, _ in NOISE_SENDERS}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxServer]:
    with SandboxServer(size="small", seed=7, state_dir=tmp_path_factory.mktemp("sandbox")) as server:
        yield server


def synced(sandbox: SandboxServer, engine: Engine, cfg_dir: Path) -> TenantConfig:
    tenant = load_config(sandbox.write_daemon_config(cfg_dir)).tenants[0]

    async def no_wait(_s: float) -> None:
        return None

    assert asyncio.run(sync_tenant(engine, tenant, sleep=no_wait, now=sandbox.org.now)).status == "ok"
    asyncio.run(mirror_tenant(engine, tenant))
    return tenant


def kpis_by_kind(sandbox: SandboxServer, payloads: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    """Planted kind -> account payloads and contact payloads, from the generator's own companies."""
    out: dict[str, Any] = {kind: {"accounts": [], "contacts": []} for kind in PROFILES}
    for company in sandbox.org.crm.companies.values():
        if ("account", company.id) in payloads:
            out[company.relationship]["accounts"].append(payloads["account", company.id])
        out[company.relationship]["contacts"] += [
            payloads[k] for c in company.contact_ids if (k := ("contact", c)) in payloads
        ]
    return out


def test_planted_relationships_come_out_as_planted(sandbox: SandboxServer, engine: Engine, tmp_path: Path) -> None:
    tenant = synced(sandbox, engine, tmp_path)
    report = compute_tenant(engine, tenant, as_of=sandbox.org.now())
    assert (report.tier, report.accuracy, report.mode, report.ambiguous_domains) == (
        "enhanced",
        "Complete",
        "incremental",
        [],
    )
    assert report.activities > 500 and report.records > 40 and report.computed == report.records
    assert report.similar_won is not None and report.similar_won > 0
    pk = ensure_tenant(engine, tenant).id
    assert pk is not None
    payloads = payloads_of(engine, pk, sandbox.org.now())
    kinds = kpis_by_kind(sandbox, payloads)

    healthy = kinds["healthy"]["accounts"]
    assert healthy and all(p["health"]["state"] == "Good" for p in healthy)
    # Planted: a healthy customer answers 85% of our emails, after a median of 4 hours.
    assert all(p["response_rate_by_them"] >= 0.7 for p in healthy)
    assert 2.5 <= statistics.median(p["median_first_response_time_by_them_hours"] for p in healthy) <= 6.0
    # Planted: a one-sided customer answers 12% of our emails, after days.
    one_sided = [p for p in kinds["one_sided"]["accounts"] if p["turns"]["ours"]["judged"] >= 5]
    assert one_sided and all(p["response_rate_by_them"] <= 0.3 for p in one_sided)

    def mean_score(kind: str) -> float:
        return statistics.fmean(p["health"]["score"] for p in kinds[kind]["contacts"])

    assert mean_score("healthy") >= 80 and mean_score("healthy") - 20 >= max(
        mean_score("cooling"), mean_score("dormant")
    )
    assert all(min(p["health"]["score"] for p in healthy) > p["health"]["score"] for p in kinds["dormant"]["accounts"])
    gone_cold = [
        p
        for kind in ("cooling", "dormant", "one_sided")
        for p in kinds[kind]["contacts"]
        if (p["health"]["state"], p["health"]["trend"]) == ("Poor", "Declining")
    ]
    assert gone_cold and all(p["health"]["weakest_part"] in ("engagement", "recency", "reciprocity") for p in gone_cold)
    # Newsletters and no-reply senders never become a relationship or anybody's top contact.
    for p in payloads.values():
        assert not any(t["person"].split("@")[-1] in NOISE_DOMAINS for t in p["top_contacts_theirs"])


def test_small_batches_on_threads_compute_what_one_batch_does(
    sandbox: SandboxServer, sqlite_engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = synced(sandbox, sqlite_engine, tmp_path)
    monkeypatch.setattr(job, "RECORD_BATCH", 10**6)
    monkeypatch.setattr(job, "LINK_BATCH", 10**9)
    whole = compute_payloads(sqlite_engine, tenant, sandbox.org.now())
    # Batches of a few records (or of one record with many links), two computed at a time.
    monkeypatch.setattr(job, "RECORD_BATCH", 3)
    monkeypatch.setattr(job, "LINK_BATCH", 40)
    p = prepare(sqlite_engine, tenant, sandbox.org.now())
    wanted = p.fingerprints()
    assert len(list(p._batches(wanted))) > len(wanted) / 3 > 10
    assert compute_payloads(sqlite_engine, tenant, sandbox.org.now()) == whole


def test_show_by_domain_and_the_basic_tier(sandbox: SandboxServer, sqlite_engine: Engine, tmp_path: Path) -> None:
    tenant = synced(sandbox, sqlite_engine, tmp_path)
    as_of = sandbox.org.now()
    compute_tenant(sqlite_engine, tenant, as_of=as_of)
    company = next(c for c in sandbox.org.crm.companies.values() if c.relationship == "healthy")
    cfg = tmp_path / "relinsights.toml"  # the sandbox's config, on this test's database
    lines = cfg.read_text().splitlines()
    cfg.write_text("\n".join(f'url = "{sqlite_engine.url}"' if x.startswith("url = ") else x for x in lines))
    res = CliRunner().invoke(app, ["kpis", "show", company.domain.upper(), "--json", "--config", str(cfg)])
    assert res.exit_code == 0, res.output
    show = json.loads(res.stdout)
    payload = payloads_of(sqlite_engine, ensure_tenant(sqlite_engine, tenant).id or 0, as_of)[("account", company.id)]
    assert show["record"]["name"] == company.name and {k: show[k] for k in payload} == payload

    # Basic tier: enhanced insights off, so only the CRM's own emails, appointments and calls count,
    # even though the Graph rows are still in the database.
    basic = tenant.model_copy(update={"enabled": False})
    p = prepare(sqlite_engine, basic, as_of)
    assert str(p.inputs.tier) == "basic" and not p.inputs.messages and not p.inputs.events
    assert len(p.frames) > 0
    enhanced = compute_payloads(sqlite_engine, tenant, as_of)
    crm_only = compute_payloads(sqlite_engine, basic, as_of)
    assert set(crm_only) <= set(enhanced)
    for ref, values in crm_only.items():
        for key in ("emails_sent", "emails_received", "meetings_sent", "meetings_received", "calls_made"):
            assert values[key] <= enhanced[ref][key], (ref, key)
        assert values["calls_made"] == enhanced[ref]["calls_made"]  # calls come from the CRM in both tiers
    assert sum(v["emails_sent"] for v in crm_only.values()) < sum(v["emails_sent"] for v in enhanced.values())
    report = compute_tenant(sqlite_engine, basic, as_of=as_of)
    assert report.tier == "basic" and report.records == len(crm_only)


def test_the_worked_example_scenario_end_to_end(sqlite_engine: Engine, tmp_path: Path) -> None:
    """kpis.md section 6 served by the sandbox, synced over Graph and Dataverse, computed: its own numbers."""
    from relinsights.sandbox.scenario import load_scenario

    scenario = load_scenario(Path(__file__).parent / "scenarios" / "worked-example.toml")
    with SandboxServer(org=scenario.org, state_dir=tmp_path / "sandbox") as sandbox:
        tenant = synced(sandbox, sqlite_engine, tmp_path)
        as_of = sandbox.org.now()
    report = compute_tenant(sqlite_engine, tenant, as_of=as_of)
    assert (report.activities, report.records) == (5, 1)
    [ann] = payloads_of(sqlite_engine, ensure_tenant(sqlite_engine, tenant).id or 0, as_of).values()
    counts = [ann[k] for k in ("emails_sent", "emails_received", "meetings_sent", "meetings_received")]
    assert counts == [2, 1, 1, 0]
    assert (ann["time_spent_by_team_minutes"], ann["time_spent_by_customer_minutes"]) == (135, 70)
    assert (ann["average_first_response_time_by_us_hours"], ann["response_rate_by_us"]) == (4.5, 1.0)
    assert (ann["average_first_response_time_by_them_hours"], ann["response_rate_by_them"]) == (None, 0.0)
    assert ann["last_interaction"]["time"] == "2026-03-05T10:00:00+00:00"
    assert ann["next_interaction"]["time"] == "2026-03-12T15:00:00+00:00"
    health = ann["health"]
    assert (health["score"], health["state"], health["trend"]) == (80, "Good", "Not enough info")
