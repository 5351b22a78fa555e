"""What one KPI run did, as `compute_tenant` returns it: logged, printed by `relinsights compute`, and
sent back by the daemon's child process (this module is all that unpickling it imports)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class ComputeReport:
    tenant: str
    as_of: datetime
    mode: str  # full | incremental
    tier: str  # enhanced | basic
    accuracy: str  # Complete | Partial
    source_rows: int = 0
    activities: int = 0
    skipped_rows: dict[str, int] = field(default_factory=dict)
    links: int = 0
    records: int = 0
    computed: int = 0
    reused: int = 0
    # Why each computed record was: "full" (a full run), "new" (no snapshot before), "inputs" (its fingerprint
    # changed), "time" (time alone moved one of its values: health decays daily, activities leave windows).
    recomputed: dict[str, int] = field(default_factory=dict)
    ambiguous_domains: list[dict[str, Any]] = field(default_factory=list)
    failed_mailboxes: list[str] = field(default_factory=list)
    similar_won: int | None = None  # open opportunities refreshed; None when the weekly refresh was not due
    run_id: int | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "as_of": self.as_of.isoformat(),
            "mode": self.mode,
            "tier": self.tier,
            "accuracy": self.accuracy,
            "source_rows": self.source_rows,
            "activities": self.activities,
            "skipped_rows": self.skipped_rows,
            "links": self.links,
            "records": self.records,
            "computed": self.computed,
            "reused": self.reused,
            "recomputed": self.recomputed,
            "ambiguous_domains": self.ambiguous_domains,
            "failed_mailboxes": self.failed_mailboxes,
            "similar_won": self.similar_won,
            "run_id": self.run_id,
            "seconds": round(self.seconds, 3),
        }
