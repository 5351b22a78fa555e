"""Fault injection: a share of requests answered the way a struggling Microsoft service answers.

Spec string: comma-separated `kind=share[:param]`, e.g.
    "429=0.05,503=0.02,slow=0.05:2.0,drop=0.01,410=0.02,token_outage=0.1,empty=0.1"

- 429: TooManyRequests with Retry-After (param: seconds, default 1)
- 503: ServiceUnavailable with Retry-After (param: seconds, default 1)
- slow: the response is delayed (param: seconds, default 2.0)
- drop: headers and half the body are sent, then the connection is closed
- 410: a delta request carrying a skip/delta token finds its sync state gone (SyncStateNotFound);
  that folder's older links die too, as in Exchange
- token_outage: the token endpoint answers 503 temporarily_unavailable (AADSTS90033)
- empty: a delta page that is not the last comes back empty (with a nextLink), as Graph sometimes does

Draws come from one RNG seeded at start, so a single-threaded run is reproducible.
"""

from __future__ import annotations

import random
import threading
from dataclasses import asdict, dataclass, fields
from typing import Any

_ALIASES = {
    "429": "throttle",
    "throttle": "throttle",
    "503": "unavailable",
    "unavailable": "unavailable",
    "slow": "slow",
    "drop": "drop",
    "410": "gone",
    "gone": "gone",
    "token_outage": "token_outage",
    "empty": "empty_page",
    "empty_page": "empty_page",
}
_PARAM = {"throttle": "throttle_retry_after", "unavailable": "unavailable_retry_after", "slow": "slow_seconds"}
_SPEC_NAME = {"throttle": "429", "unavailable": "503", "gone": "410", "empty_page": "empty"}


class FaultSpecError(ValueError):
    pass


@dataclass
class FaultSpec:
    throttle: float = 0.0
    throttle_retry_after: float = 1.0
    unavailable: float = 0.0
    unavailable_retry_after: float = 1.0
    slow: float = 0.0
    slow_seconds: float = 2.0
    drop: float = 0.0
    gone: float = 0.0
    token_outage: float = 0.0
    empty_page: float = 0.0

    @classmethod
    def parse(cls, spec: str | None) -> FaultSpec:
        out = cls()
        for part in (spec or "").split(","):
            part = part.strip()
            if not part:
                continue
            name, sep, value = part.partition("=")
            kind = _ALIASES.get(name.strip().lower())
            if kind is None or not sep:
                raise FaultSpecError(f"unknown fault {name!r} (known: {', '.join(sorted(set(_ALIASES)))})")
            share_s, _, param_s = value.partition(":")
            try:
                share = float(share_s)
                param = float(param_s) if param_s else None
            except ValueError:
                raise FaultSpecError(f"{part!r}: expected kind=share[:number]") from None
            if not 0.0 <= share <= 1.0:
                raise FaultSpecError(f"{part!r}: the share must be between 0 and 1")
            setattr(out, kind, share)
            if param is not None:
                if kind not in _PARAM or param < 0:
                    raise FaultSpecError(f"{part!r}: this fault takes no parameter")
                setattr(out, _PARAM[kind], param)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaultSpec:
        """{"spec": "429=0.1"} or {"429": 0.1, "slow": [0.1, 2.0], ...} or the field names."""
        if "spec" in data:
            return cls.parse(str(data["spec"]))
        names = {f.name for f in fields(cls)}
        parts: list[tuple[str, Any]] = []
        for k, v in data.items():
            kind = _ALIASES.get(str(k).lower())
            if kind is None and k in names:
                parts.append((k, v))
                continue
            if kind is None:
                raise FaultSpecError(f"unknown fault {k!r}")
            if isinstance(v, list | tuple):
                parts.append((kind, float(v[0])))
                if len(v) > 1 and kind in _PARAM:
                    parts.append((_PARAM[kind], float(v[1])))
            else:
                parts.append((kind, v))
        out = cls()
        for k, v in parts:
            if not isinstance(v, int | float) or isinstance(v, bool):
                raise FaultSpecError(f"{k}: expected a number")
            setattr(out, k, float(v))
        return out

    def to_spec(self) -> str:
        parts = []
        for kind in ("throttle", "unavailable", "slow", "drop", "gone", "token_outage", "empty_page"):
            share = getattr(self, kind)
            if share:
                text = f"{_SPEC_NAME.get(kind, kind)}={share:g}"
                if kind in _PARAM:
                    text += f":{getattr(self, _PARAM[kind]):g}"
                parts.append(text)
        return ",".join(parts)


class FaultInjector:
    """Thread-safe holder of the current spec, the seeded RNG, and counts of what was injected."""

    def __init__(self, spec: FaultSpec | str | None = None, seed: int = 1) -> None:
        self._lock = threading.Lock()
        self.spec = spec if isinstance(spec, FaultSpec) else FaultSpec.parse(spec)
        self._rng = random.Random(seed)
        self.injected: dict[str, int] = {}

    def set(self, spec: FaultSpec | str, seed: int | None = None) -> None:
        with self._lock:
            self.spec = spec if isinstance(spec, FaultSpec) else FaultSpec.parse(spec)
            if seed is not None:
                self._rng = random.Random(seed)

    def roll(self, kind: str) -> bool:
        """True if this request gets fault `kind` (no draw at all when its share is 0)."""
        with self._lock:
            share = getattr(self.spec, kind)
            if share <= 0.0:
                return False
            hit = share >= 1.0 or self._rng.random() < share
            if hit:
                self.injected[kind] = self.injected.get(kind, 0) + 1
            return hit

    def state(self) -> dict[str, Any]:
        with self._lock:
            return {"spec": self.spec.to_spec(), "settings": asdict(self.spec), "injected": dict(self.injected)}
