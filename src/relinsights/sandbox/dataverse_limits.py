"""Settings of the sandbox's Dataverse and its service protection limits.

Dataverse limits each user (here: each application, by the token's object id) over a sliding window:
the number of requests, their combined execution time, and concurrent requests. Over a limit the request
gets 429 with `Retry-After` (whole seconds) and the documented error codes:

    0x80072322  Number of requests exceeded the limit of 6000 over time window of 300 seconds.
    0x80072321  Combined execution time of incoming requests exceeded limit of 1,200,000 milliseconds ...
    0x80072326  Number of concurrent requests exceeded the limit of 52.

Rejected requests count too, so a client that retries before `Retry-After` has passed prolongs its own
penalty, as the documentation warns. Each request of a `$batch` counts as one request. Successful
responses carry `x-ms-ratelimit-burst-remaining-xrm-requests`, `x-ms-ratelimit-time-remaining-xrm-requests`
and `x-ms-dop-hint`.

The defaults are Dataverse's documented ones; tests pass small values (for example 5 requests per 2 s)
through `SandboxServer(dataverse_settings=...)` or POST /_sandbox/dataverse.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field, fields
from datetime import timedelta
from typing import Any

from .dataverse_http import DataverseError


@dataclass
class DataverseSettings:
    max_requests: int = 6000  # per window, per user
    window_seconds: float = 300.0
    max_execution_seconds: float = 1200.0  # combined server time per window
    max_concurrent: int = 52
    dop_hint: int = 4  # the x-ms-dop-hint the service recommends
    latency_seconds: float = 0.0  # added to every request (counts as execution time)
    row_cost_seconds: float = 0.0  # execution time charged per row written (bulk operations cost more)
    max_page_size: int = 5000
    batch_limit: int = 1000
    change_tracking_retention: timedelta = timedelta(days=7)  # by the sandbox clock
    application_user: bool = True  # False: the app was never added as an application user (403)
    missing_privileges: set[str] = field(default_factory=set)  # e.g. {"prvCreatemsdyn_contactkpiitem"}

    def update(self, data: dict[str, Any]) -> None:
        """Change settings from JSON (the admin endpoint); unknown names raise ValueError."""
        names = {f.name: f for f in fields(self)}
        for key, value in data.items():
            if key not in names:
                raise ValueError(f"unknown Dataverse setting {key!r} (known: {', '.join(sorted(names))})")
            if key == "change_tracking_retention":
                value = timedelta(seconds=float(value))
            elif key == "missing_privileges":
                value = {str(v) for v in value}
            elif key == "application_user":
                value = bool(value)
            elif isinstance(getattr(self, key), int):
                value = int(value)
            else:
                value = float(value)
            setattr(self, key, value)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, timedelta):
                v = v.total_seconds()
            elif isinstance(v, set):
                v = sorted(v)
            out[f.name] = v
        return out


@dataclass
class _Usage:
    requests: deque[list[float]] = field(default_factory=deque)  # [time, execution seconds]
    inflight: int = 0


class ServiceProtection:
    def __init__(self, settings: DataverseSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._users: dict[str, _Usage] = {}
        self.throttled: dict[str, int] = {}  # error code -> how many 429s

    def _prune(self, usage: _Usage, now: float) -> None:
        horizon = now - self.settings.window_seconds
        while usage.requests and usage.requests[0][0] <= horizon:
            usage.requests.popleft()

    def admit(self, key: str, weight: int = 1) -> list[float]:
        """Count a request (or the `weight` requests of a batch); raises the 429 when over a limit.
        Returns the usage entry to charge execution time to with `release`."""
        st = self.settings
        with self._lock:
            now = time.monotonic()
            usage = self._users.setdefault(key, _Usage())
            self._prune(usage, now)
            if usage.inflight >= st.max_concurrent:
                raise self._throttle(
                    "0x80072326", f"Number of concurrent requests exceeded the limit of {st.max_concurrent}.", 1
                )
            entries = [[now, 0.0] for _ in range(max(1, weight))]
            usage.requests.extend(entries)  # rejected requests count too: retrying early prolongs the penalty
            if len(usage.requests) > st.max_requests:
                oldest = usage.requests[len(usage.requests) - st.max_requests][0]
                raise self._throttle(
                    "0x80072322",
                    f"Number of requests exceeded the limit of {st.max_requests} "
                    f"over time window of {st.window_seconds:g} seconds.",
                    oldest + st.window_seconds - now,
                )
            spent = sum(e[1] for e in usage.requests)
            if spent >= st.max_execution_seconds:
                wait, left = 0.0, spent
                for t, cost in usage.requests:
                    left -= cost
                    wait = t + st.window_seconds - now
                    if left < st.max_execution_seconds:
                        break
                raise self._throttle(
                    "0x80072321",
                    "Combined execution time of incoming requests exceeded limit of "
                    f"{int(st.max_execution_seconds * 1000):,}  milliseconds over time window of "
                    f"{st.window_seconds:g} seconds. Decrease number of concurrent requests or reduce the duration "
                    "of requests and try again later.",
                    wait,
                )
            usage.inflight += 1
            return entries[-1]

    def charge(self, key: str, extra_requests: int) -> None:
        """Count the inner requests of a `$batch` beyond the one admitted."""
        if extra_requests <= 0:
            return
        with self._lock:
            usage = self._users.setdefault(key, _Usage())
            now = time.monotonic()
            usage.requests.extend([now, 0.0] for _ in range(extra_requests))

    def release(self, key: str, entry: list[float], seconds: float) -> None:
        with self._lock:
            usage = self._users[key]
            usage.inflight = max(0, usage.inflight - 1)
            entry[1] += seconds

    def _throttle(self, code: str, message: str, retry_after: float) -> DataverseError:
        self.throttled[code] = self.throttled.get(code, 0) + 1
        seconds = max(1, math.ceil(retry_after))
        return DataverseError(429, code, message, headers={"Retry-After": str(seconds)})

    def headers(self, key: str) -> dict[str, str]:
        st = self.settings
        with self._lock:
            usage = self._users.get(key, _Usage())
            self._prune(usage, time.monotonic())
            spent = sum(e[1] for e in usage.requests)
            left = max(0, st.max_requests - len(usage.requests))
        return {
            "x-ms-ratelimit-burst-remaining-xrm-requests": str(left),
            "x-ms-ratelimit-time-remaining-xrm-requests": f"{max(0.0, st.max_execution_seconds - spent):,.2f}",
            "x-ms-dop-hint": str(st.dop_hint),
        }

    def reset(self) -> None:
        with self._lock:
            self._users.clear()
