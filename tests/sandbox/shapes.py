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


def shape_problems(doc: Any, got: Any, path: str = "$", ignore: frozenset[str] = frozenset()) -> list[str]:
    """Where `got` lacks something `doc` has, or has it with another JSON type. Extra keys are fine
    (checked separately against msgraph-sdk's models)."""
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
                out += shape_problems(v, got[k], f"{path}.{k}", ignore)
    elif kd == "array" and doc and got:
        # compare each documented element with the sandbox element of the same kind (@removed or not)
        for d in doc:
            same = [g for g in got if kind(g) != "object" or ("@removed" in g) == ("@removed" in d)]
            if same:
                out += shape_problems(d, same[0], f"{path}[]", ignore)
    return out
