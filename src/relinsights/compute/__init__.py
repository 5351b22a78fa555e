"""The KPI computation over the database: the pure analytics core fed from synced rows, stored as snapshots.

Modules, in pipeline order:

- `load`, `dataverse_rows`: database rows -> typed sources, CRM records and party rules for one tenant;
- `job`: build activities -> match -> KPIs per record -> store (`compute_tenant`); `report`: what a run did;
- `fingerprint`: the incremental rule, which stored values are still exact as of a later T;
- `payload`, `store`: a record's KPIs as JSON under stable keys; the run and snapshot tables;
- `similar`: similar won opportunities, weekly;
- `schedule`: when the daemon's daily computation is due;
- `child`: the daemon's computation in a process of its own, started for the run;
- `views`, `widgets`: `relinsights kpis show|list`, finding a record and rendering its KPIs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relinsights.compute.report import ComputeReport

if TYPE_CHECKING:
    from relinsights.compute.job import compute_payloads, compute_tenant, prepare

__all__ = ["ComputeReport", "compute_payloads", "compute_tenant", "prepare"]


def __getattr__(name: str) -> Any:
    """The job's functions, imported when first asked for: the daemon imports this package for the schedule
    and the snapshot store and runs the job in a child process, so it never loads polars or numpy."""
    if name in ("compute_payloads", "compute_tenant", "prepare"):
        from relinsights.compute import job

        return getattr(job, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
