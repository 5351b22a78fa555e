"""Compare JSON shapes: keys, nesting and value types (null is compatible with any type: nullable)."""

from __future__ import annotations

from typing import Any


def kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def shape_problems(
    doc: Any,
    got: Any,
    path: str = "$",
    ignore: frozenset[str] = frozenset(),
    marker: str = "@removed",
    strict_items: bool = False,
) -> list[str]:
    """Where `got` lacks something `doc` has, or has it with another JSON type. Extra keys are fine
    (checked separately against msgraph-sdk's models). Documented array items are compared with the
    sandbox item of the same sort: with `marker` (a removal: Graph's `@removed`, Dataverse's `reason`)
    or without; `strict_items` reports a documented sort the sandbox did not return."""
    if path in ignore:
        return []
    kd, kg = kind(doc), kind(got)
    if "null" in (kd, kg):
        return []
    if kd != kg:
        return [f"{path}: documented {kd}, sandbox {kg}"]
    out: list[str] = []
    if kd == "object":
        for k, v in doc.items():
            if f"{path}.{k}" in ignore:
                continue
            if k not in got:
                out.append(f"{path}.{k}: missing")
            else:
                out += shape_problems(v, got[k], f"{path}.{k}", ignore, marker, strict_items)
    elif kd == "array" and doc and got:
        for d in doc:
            same = [g for g in got if kind(g) != "object" or (marker in g) == (marker in d)]
            if same:
                out += shape_problems(d, same[0], f"{path}[]", ignore, marker, strict_items)
            elif strict_items:
                out.append(f"{path}[]: no sandbox item like {sorted(d)}")
    return out
