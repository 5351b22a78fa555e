"""relinsights: self-hosted relationship analytics for Microsoft 365 sales teams."""

import os

__version__ = "0.1.0"

# polars' allocator (jemalloc) keeps freed pages for ten seconds by default: a KPI run's short-lived column
# tables then pile up (about 80 MiB more peak at 400,000 activities, scripts/bench_compute.py). Return them
# at once instead; read when polars loads, so it is set here, before anything imports it. An admin's own
# setting wins.
os.environ.setdefault("_RJEM_MALLOC_CONF", "dirty_decay_ms:0,muzzy_decay_ms:0")
