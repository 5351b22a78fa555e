"""Regressions in building the sandbox's CRM from generated organisations."""

from __future__ import annotations

import pytest

from relinsights.sandbox.server import SandboxServer


@pytest.mark.parametrize("seed", range(1, 7))
def test_every_seed_builds_a_crm_with_one_connection_per_stakeholder(seed: int, tmp_path) -> None:
    # Seed 2 once drew the same contact twice as a stakeholder and failed on a duplicate connection id.
    sb = SandboxServer(size="small", seed=seed, state_dir=tmp_path)
    connections = sb.crm.truth(["connections"])["connections"].values()
    pairs = [(c["_record1id_value"], c["_record2id_value"]) for c in connections]
    assert len(pairs) == len(set(pairs)) and pairs
