"""Admin endpoints under /_sandbox: switch faults, move the clock, read the truth.

They need no Microsoft token, so they answer loopback clients only (the server binds to loopback anyway;
this guards a server started with another host).
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .faults import FaultInjector, FaultSpec, FaultSpecError
from .model import Org, SandboxError
from .odata import JSONResponse, parse_datetime


def _loopback(request: Request) -> bool:
    host = request.client.host if request.client else ""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": "SandboxAdmin", "message": message}}, status_code=status)


async def _json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    return data


class Admin:
    def __init__(self, org: Org, faults: FaultInjector) -> None:
        self.org = org
        self.faults = faults

    def routes(self) -> list[Route]:
        return [
            Route("/_sandbox/faults", self.fault_state, methods=["GET", "POST"]),
            Route("/_sandbox/advance", self.advance, methods=["POST"]),
            Route("/_sandbox/truth", self.truth, methods=["GET"]),
            Route("/_sandbox/expire-delta-tokens", self.expire, methods=["POST"]),
            Route("/_sandbox/stats", self.stats, methods=["GET"]),
        ]

    async def fault_state(self, request: Request) -> Response:
        if not _loopback(request):
            return _problem(403, "admin endpoints answer loopback clients only")
        if request.method == "POST":
            try:
                data = await _json(request)
                seed = data.pop("seed", None)
                self.faults.set(FaultSpec.from_json(data), seed=int(seed) if seed is not None else None)
            except (FaultSpecError, ValueError, TypeError) as exc:
                return _problem(400, str(exc))
        return JSONResponse(self.faults.state())

    async def advance(self, request: Request) -> Response:
        """{"hours": N} (also days, minutes, seconds): move the clock; the generator fills the period."""
        if not _loopback(request):
            return _problem(403, "admin endpoints answer loopback clients only")
        try:
            data = await _json(request)
            delta = timedelta(**{k: float(data[k]) for k in ("days", "hours", "minutes", "seconds") if k in data})
            if delta <= timedelta(0):
                return _problem(400, 'give a positive period, e.g. {"hours": 24}')
            activity = self.org.advance(delta)
        except (ValueError, TypeError, SandboxError) as exc:
            return _problem(400, str(exc))
        return JSONResponse({"clock": self.org.now().isoformat(), "seq": self.org.seq, "activity": activity})

    async def truth(self, request: Request) -> Response:
        """?user=upn-or-id&start=ISO&end=ISO&exclude=deleteditems,junkemail (defaults: all users, the
        daemon's default folder exclusions, a window of 365 days back and 90 ahead)."""
        if not _loopback(request):
            return _problem(403, "admin endpoints answer loopback clients only")
        q = request.query_params
        try:
            window = (parse_datetime(q["start"]), parse_datetime(q["end"])) if "start" in q and "end" in q else None
            kw: dict[str, Any] = {"user": q.get("user"), "window": window}
            if "exclude" in q:
                kw["exclude"] = [x for x in q["exclude"].split(",") if x]
            return JSONResponse(self.org.truth(**kw))
        except (ValueError, SandboxError) as exc:
            return _problem(400, str(exc))

    async def expire(self, request: Request) -> Response:
        if not _loopback(request):
            return _problem(403, "admin endpoints answer loopback clients only")
        data = await _json(request)
        try:
            self.org.expire_delta_tokens(data.get("user"))
        except SandboxError as exc:
            return _problem(400, str(exc))
        return JSONResponse({"expired": data.get("user") or "all"})

    async def stats(self, request: Request) -> Response:
        if not _loopback(request):
            return _problem(403, "admin endpoints answer loopback clients only")
        return JSONResponse({**self.org.stats(), "clock": self.org.now().isoformat(), "faults": self.faults.state()})
