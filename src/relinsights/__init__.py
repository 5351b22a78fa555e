"""relinsights: self-hosted relationship analytics for Microsoft 365 sales teams."""

import os

__version__ = "0.1.0"

# polars' allocator (jemalloc) keeps freed pages for a while (polars' own defaults: 0.5 s dirty, 1 s muzzy),
# so a KPI run's short-lived column tables pile up (about 80 MiB more peak at 400,000 activities,
# scripts/bench_compute.py). Return them at once instead. One arena for all of polars' threads (its own
# default is eight on two cores): what one thread frees another reuses, not pages handed over again (a
# KPI run at 2,000,000 activities took 0.2-1.0 s less, with half the page faults of its KPI step). Read when
# polars loads (after its own defaults, so this wins), hence set here, before anything imports it. An admin's
# own setting wins over ours, here and in the reader processes of compute/bulk_read.py (which have their own
# otherwise): kept as it was, since polars puts its defaults in front of the variable when it loads.
ADMIN_MALLOC_CONF = os.environ.get("_RJEM_MALLOC_CONF")
os.environ.setdefault("_RJEM_MALLOC_CONF", "narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0")

# polars' in-memory engine for a query collected without saying which: "auto" took its streaming engine for
# some of them, and a KPI run at 2,000,000 activities then took 0.2-1.1 s longer, with 1 s more CPU (the
# queries are on frames already in memory). A query that holds less streamed says so where it is collected.
# Also read when polars loads; an admin's own setting wins.
os.environ.setdefault("POLARS_ENGINE_AFFINITY", "in-memory")
