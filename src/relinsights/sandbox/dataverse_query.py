"""OData query options as Dataverse applies them, and rows rendered as the Web API returns them.

- `$select`: Web API names (`_parentcustomerid_value` for lookups), case-sensitive; the primary key is
  always returned, after the selected columns, and every row carries `@odata.etag`.
- `$filter`: eq/ne/gt/ge/lt/le on strings (case-insensitive, as SQL Server compares), numbers, booleans,
  dates (unquoted), GUIDs (unquoted) and null; `and`, `or`, `not`, parentheses; `contains`,
  `startswith`, `endswith`; `Microsoft.Dynamics.CRM.In(PropertyName=..,PropertyValues=[..])`; and
  `lookup/primarykey` paths. Anything else is a 400 with Dataverse's error shape.
- `$orderby`: one or more columns, asc/desc (nulls first ascending, as SQL Server sorts).
- `$expand`: single-valued navigation properties and the collection-valued ones the schema declares,
  each with an optional nested `$select`.
- Annotations (formatted values, lookup logical names, associated navigation properties) only when
  `Prefer: odata.include-annotations` asks for them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from .crm_store import CrmStore
from .dataverse_http import bad_request
from .dataverse_schema import ENTITIES, Collection, Column, Entity, Ref, to_json

FORMATTED = "OData.Community.Display.V1.FormattedValue"
LOOKUP_NAME = "Microsoft.Dynamics.CRM.lookuplogicalname"
NAV_NAME = "Microsoft.Dynamics.CRM.associatednavigationproperty"
GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

Row = dict[str, Any]
Predicate = Callable[[Row], bool]


def unknown_property(name: str, e: Entity) -> Exception:
    return bad_request(f"Could not find a property named '{name}' on type '{e.type_name}'.")


# ---------------------------------------------------------------- $select / $orderby / $expand


def parse_select(raw: str | None, e: Entity) -> list[Column] | None:
    if raw is None or not raw.strip():
        return None
    out: list[Column] = []
    for name in (n.strip() for n in raw.split(",")):
        if not name:
            raise bad_request(f"Syntax error: the $select clause '{raw}' has an empty item.")
        if name == "*":
            return None
        col = e.by_web_name.get(name)
        if col is None:
            raise unknown_property(name, e)
        if col not in out:
            out.append(col)
    return out


def parse_orderby(raw: str | None, e: Entity) -> list[tuple[Column, bool]]:
    out: list[tuple[Column, bool]] = []
    for part in (p.strip() for p in (raw or "").split(",")):
        if not part:
            continue
        bits = part.split()
        if len(bits) > 2 or (len(bits) == 2 and bits[1] not in ("asc", "desc")):
            raise bad_request(f"Syntax error at position {len(bits[0]) + 1} in '{part}'.")
        col = e.by_web_name.get(bits[0])
        if col is None:
            raise unknown_property(bits[0], e)
        out.append((col, len(bits) == 2 and bits[1] == "desc"))
    return out


def sort_rows(rows: list[Row], e: Entity, order: list[tuple[Column, bool]]) -> list[Row]:
    out = sorted(rows, key=lambda r: r[e.pk])
    for col, desc in reversed(order):

        def key(r: Row, name: str = col.name) -> tuple[int, Any]:
            return _sort_key(r.get(name))

        out.sort(key=key, reverse=desc)
    return out


def _sort_key(v: Any) -> tuple[int, Any]:
    if v is None:
        return (0, "")
    if isinstance(v, Ref):
        return (1, v.id)
    if isinstance(v, str):
        return (1, v.lower())
    if isinstance(v, datetime | date) and not isinstance(v, datetime):
        return (1, datetime(v.year, v.month, v.day, tzinfo=UTC))
    return (1, v)


@dataclass
class Expansion:
    name: str
    target: Entity
    select: list[Column] | None
    column: Column | None = None  # single-valued: the lookup
    collection: Collection | None = None


def parse_expand(raw: str | None, e: Entity) -> list[Expansion]:
    if raw is None or not raw.strip():
        return []
    out: list[Expansion] = []
    for item in _split_top(raw):
        m = re.fullmatch(r"\s*([A-Za-z_]\w*)\s*(?:\((.*)\))?\s*", item, re.S)
        if m is None:
            raise bad_request(f"Syntax error in $expand '{raw}'.")
        name, inner = m.group(1), m.group(2)
        select_raw: str | None = None
        for opt in _split_top(inner or "", ";"):
            key, _, value = opt.strip().partition("=")
            if not key:
                continue
            if key != "$select":
                raise bad_request(f"The query option '{key}' is not supported inside $expand by the sandbox.")
            select_raw = value
        if name in e.navs:
            col = e.navs[name]
            target = ENTITIES[(col.navs or {})[name]]
            out.append(Expansion(name, target, parse_select(select_raw, target), column=col))
        elif name in e.collections:
            coll = e.collections[name]
            target = ENTITIES[coll.target]
            out.append(Expansion(name, target, parse_select(select_raw, target), collection=coll))
        else:
            raise unknown_property(name, e)
    return out


def _split_top(raw: str, sep: str = ",") -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in raw:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    return parts


# ---------------------------------------------------------------- $filter

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<str>'(?:[^']|'')*')
    | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![\w-])
    | (?P<dt>\d{4}-\d{2}-\d{2}(?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)(?![\w-])
    | (?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)[mMlLdDfF]?(?![\w])
    | (?P<name>[A-Za-z_][\w.]*(?:/[A-Za-z_]\w*)*)
    | (?P<punct>[(),\[\]=])
    )""",
    re.X,
)
_OPS = {"eq", "ne", "gt", "ge", "lt", "le"}


@dataclass
class _Tok:
    kind: str
    text: str
    pos: int


def _tokenize(raw: str) -> list[_Tok]:
    out, pos = [], 0
    while pos < len(raw):
        if raw[pos:].strip() == "":
            break
        m = _TOKEN.match(raw, pos)
        if m is None:
            raise bad_request(f"Syntax error at position {pos} in '{raw}'.")
        kind = m.lastgroup or "punct"
        out.append(_Tok(kind, m.group(kind), m.start(kind)))
        pos = m.end()
    return out


class _Literal:
    def __init__(self, kind: str, value: Any, text: str) -> None:
        self.kind, self.value, self.text = kind, value, text

    @property
    def edm(self) -> str:
        return {
            "str": "Edm.String",
            "guid": "Edm.Guid",
            "dt": "Edm.DateTimeOffset",
            "date": "Edm.Date",
            "int": "Edm.Int32",
            "num": "Edm.Decimal",
            "bool": "Edm.Boolean",
            "null": "null",
        }[self.kind]


class FilterParser:
    def __init__(self, raw: str, e: Entity) -> None:
        self.raw, self.e = raw, e
        self.toks = _tokenize(raw)
        self.i = 0

    def parse(self) -> Predicate:
        if not self.toks:
            raise bad_request("The $filter expression is empty.")
        pred = self._or()
        if self.i < len(self.toks):
            t = self.toks[self.i]
            raise bad_request(f"Syntax error at position {t.pos} in '{self.raw}'.")
        return pred

    # grammar
    def _peek(self) -> _Tok | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _next(self) -> _Tok:
        t = self._peek()
        if t is None:
            raise bad_request(f"Syntax error at position {len(self.raw)} in '{self.raw}'.")
        self.i += 1
        return t

    def _expect(self, text: str) -> None:
        t = self._next()
        if t.text != text:
            raise bad_request(f"Syntax error at position {t.pos} in '{self.raw}': '{text}' expected.")

    def _word(self, word: str) -> bool:
        t = self._peek()
        if t is not None and t.kind == "name" and t.text == word:
            self.i += 1
            return True
        return False

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._word("or"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda r: any(p(r) for p in parts))

    def _and(self) -> Predicate:
        parts = [self._unary()]
        while self._word("and"):
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else (lambda r: all(p(r) for p in parts))

    def _unary(self) -> Predicate:
        if self._word("not"):
            inner = self._unary()
            return lambda r: not inner(r)
        t = self._peek()
        if t is not None and t.text == "(":
            self.i += 1
            inner = self._or()
            self._expect(")")
            return inner
        return self._atom()

    def _atom(self) -> Predicate:
        t = self._next()
        if t.kind != "name":
            raise bad_request(f"Syntax error at position {t.pos} in '{self.raw}'.")
        nxt = self._peek()
        if nxt is not None and nxt.text == "(":
            return self._function(t)
        col = self._column(t.text)
        op = self._next()
        if op.kind != "name" or op.text not in _OPS:
            raise bad_request(f"Syntax error at position {op.pos} in '{self.raw}'.")
        lit = self._literal()
        return self._compare(col, op.text, lit)

    def _column(self, name: str) -> Column:
        if "/" in name:
            nav, _, key = name.partition("/")
            col = self.e.navs.get(nav)
            if col is None or "/" in key:
                raise unknown_property(nav, self.e)
            target = ENTITIES[(col.navs or {})[nav]]
            if key != target.pk:
                raise bad_request(f"The sandbox supports only '{nav}/{target.pk}' paths in $filter (got '{name}').")
            return col
        col = self.e.by_web_name.get(name)
        if col is None:
            raise unknown_property(name, self.e)
        return col

    def _literal(self) -> _Literal:
        t = self._next()
        if t.kind == "str":
            return _Literal("str", t.text[1:-1].replace("''", "'"), t.text)
        if t.kind == "guid":
            return _Literal("guid", t.text.lower(), t.text)
        if t.kind == "dt":
            if "T" not in t.text:
                return _Literal("date", date.fromisoformat(t.text), t.text)
            from .odata import parse_datetime

            try:
                return _Literal("dt", parse_datetime(t.text), t.text)
            except ValueError:
                raise bad_request(f"Unrecognized 'Edm.DateTimeOffset' literal '{t.text}'.") from None
        if t.kind == "num":
            if re.fullmatch(r"-?\d+", t.text):
                return _Literal("int", int(t.text), t.text)
            return _Literal("num", float(t.text), t.text)
        if t.kind == "name" and t.text in ("true", "false"):
            return _Literal("bool", t.text == "true", t.text)
        if t.kind == "name" and t.text == "null":
            return _Literal("null", None, t.text)
        raise bad_request(f"Syntax error at position {t.pos} in '{self.raw}'.")

    def _coerce(self, col: Column, lit: _Literal, op: str) -> Any:
        if lit.kind == "null":
            return None
        kind = col.kind
        ok = (
            (kind == "string" and lit.kind == "str")
            or (kind in ("guid", "lookup") and lit.kind == "guid")
            or (kind in ("int", "bigint", "choice") and lit.kind == "int")
            or (kind in ("decimal", "money") and lit.kind in ("int", "num"))
            or (kind == "bool" and lit.kind == "bool")
            or (kind == "datetime" and lit.kind in ("dt", "date"))
            or (kind == "date" and lit.kind in ("date", "dt"))
        )
        if not ok:
            kinds = {"eq": "Equal", "ne": "NotEqual", "gt": "GreaterThan", "ge": "GreaterThanOrEqual"}
            kinds |= {"lt": "LessThan", "le": "LessThanOrEqual"}
            raise bad_request(
                "A binary operator with incompatible types was detected. Found operand types "
                f"'{col.edm}' and '{lit.edm}' for operator kind '{kinds.get(op, op)}'."
            )
        v = lit.value
        if kind == "datetime" and lit.kind == "date":
            return datetime(v.year, v.month, v.day, tzinfo=UTC)
        if kind == "date" and lit.kind == "dt":
            return v.date()
        if kind == "string":
            return v.lower()
        return v

    def _compare(self, col: Column, op: str, lit: _Literal) -> Predicate:
        want = self._coerce(col, lit, op)
        name = col.name

        def get(r: Row) -> Any:
            v = r.get(name)
            if isinstance(v, Ref):
                return v.id
            if isinstance(v, str) and col.kind == "string":
                return v.lower()
            return v

        if want is None:
            if op not in ("eq", "ne"):
                raise bad_request(f"The operator '{op}' cannot be used with null.")
            return (lambda r: get(r) is None) if op == "eq" else (lambda r: get(r) is not None)
        compare = {
            "eq": lambda a, b: a == b,
            "ne": lambda a, b: a != b,
            "gt": lambda a, b: a > b,
            "ge": lambda a, b: a >= b,
            "lt": lambda a, b: a < b,
            "le": lambda a, b: a <= b,
        }[op]

        def pred(r: Row) -> bool:
            v = get(r)
            return v is not None and bool(compare(v, want))

        return pred

    def _function(self, name_tok: _Tok) -> Predicate:
        name = name_tok.text
        self._expect("(")
        if name in ("contains", "startswith", "endswith"):
            col_tok = self._next()
            col = self._column(col_tok.text)
            self._expect(",")
            lit = self._literal()
            self._expect(")")
            if col.kind != "string" or lit.kind != "str":
                raise bad_request(
                    f"No function signature for the function with name '{name}' matches the specified arguments. "
                    f"The function signatures considered are: {name}(Edm.String Nullable=true, Edm.String)."
                )
            needle = str(lit.value).lower()
            test = {
                "contains": lambda v: needle in v,
                "startswith": lambda v: v.startswith(needle),
                "endswith": lambda v: v.endswith(needle),
            }[name]
            cname = col.name
            return lambda r: r.get(cname) is not None and test(str(r[cname]).lower())
        if name in ("Microsoft.Dynamics.CRM.In", "Microsoft.Dynamics.CRM.NotIn"):
            args: dict[str, Any] = {}
            while True:
                key = self._next()
                self._expect("=")
                if key.text == "PropertyValues":
                    self._expect("[")
                    values: list[_Literal] = []
                    while self._peek() is not None and self._peek().text != "]":  # type: ignore[union-attr]
                        values.append(self._literal())
                        if self._peek() is not None and self._peek().text == ",":  # type: ignore[union-attr]
                            self.i += 1
                    self._expect("]")
                    args["values"] = values
                else:
                    args[key.text] = self._literal()
                t = self._next()
                if t.text == ")":
                    break
                if t.text != ",":
                    raise bad_request(f"Syntax error at position {t.pos} in '{self.raw}'.")
            prop = args.get("PropertyName")
            if prop is None or prop.kind != "str" or "values" not in args:
                raise bad_request(f"{name} needs PropertyName='...' and PropertyValues=[...].")
            col = self._column(prop.value)
            wanted = set()
            for v in args["values"]:
                lit = (
                    _Literal("guid", v.value.lower(), v.text)
                    if col.kind in ("guid", "lookup") and v.kind == "str"
                    else v
                )
                wanted.add(self._coerce(col, lit, "eq"))
            cname = col.name
            inside = name.endswith(".In")

            def member(r: Row) -> bool:
                v = r.get(cname)
                v = v.id if isinstance(v, Ref) else (v.lower() if isinstance(v, str) and col.kind == "string" else v)
                return (v in wanted) if inside else (v is not None and v not in wanted)

            return member
        raise bad_request(
            f"The function '{name}' is not supported by the sandbox's $filter (supported: contains, startswith, "
            "endswith, Microsoft.Dynamics.CRM.In, Microsoft.Dynamics.CRM.NotIn)."
        )


def parse_filter(raw: str | None, e: Entity) -> Predicate:
    if raw is None:
        return lambda r: True
    return FilterParser(raw, e).parse()


# ---------------------------------------------------------------- rendering


def formatted(store: CrmStore, col: Column, v: Any) -> str | None:
    if v is None:
        return None
    kind = col.kind
    if kind == "bool":
        return col.labels[int(bool(v))]
    if kind == "choice":
        return (col.options or {}).get(v, str(v))
    if kind in ("int", "bigint"):
        return f"{v:,}"
    if kind == "decimal":
        return f"{v:,.{col.precision}f}"
    if kind == "money":
        return f"${v:,.2f}"
    if kind == "datetime":
        dt = v.astimezone(UTC)
        hour = dt.hour % 12 or 12
        return f"{dt.month}/{dt.day}/{dt.year} {hour}:{dt.minute:02d} {'AM' if dt.hour < 12 else 'PM'}"
    if kind == "date":
        return f"{v.month}/{v.day}/{v.year}"
    if kind == "lookup":
        return store.name_of(v)
    return None


class Renderer:
    """Turns stored rows into Web API JSON for one request (annotations and expansions included)."""

    def __init__(self, store: CrmStore, annotations: Callable[[str], bool]) -> None:
        self.store = store
        self.want = annotations
        self._groups: dict[tuple[str, str], dict[str, list[Row]]] = {}

    def row(self, e: Entity, row: Row, select: list[Column] | None, expand: list[Expansion] = ()) -> dict[str, Any]:  # type: ignore[assignment]
        out: dict[str, Any] = {"@odata.etag": f'W/"{row["versionnumber"]}"'}
        cols = select if select is not None else list(e.columns.values())
        for c in cols:
            self._put(out, e, c, row.get(c.name))
        if select is not None and e.pk not in {c.name for c in select}:
            out[e.pk] = row[e.pk]
        for x in expand:
            out[x.name] = self._expand(e, row, x)
        return out

    def _put(self, out: dict[str, Any], e: Entity, c: Column, v: Any) -> None:
        name = c.web_name
        if v is not None:
            if self.want(FORMATTED):
                text = formatted(self.store, c, v)
                if text is not None:
                    out[f"{name}@{FORMATTED}"] = text
            if c.kind == "lookup":
                if self.want(NAV_NAME):
                    out[f"{name}@{NAV_NAME}"] = e.nav_to(c, v.entity)
                if self.want(LOOKUP_NAME):
                    out[f"{name}@{LOOKUP_NAME}"] = v.entity
        out[name] = to_json(c, v)

    def _expand(self, e: Entity, row: Row, x: Expansion) -> Any:
        if x.column is not None:
            ref = row.get(x.column.name)
            if ref is None or ref.entity != x.target.logical:
                return None
            target = self.store.get(ref.entity, ref.id)
            return self.row(x.target, target, x.select) if target is not None else None
        coll = x.collection
        assert coll is not None
        if coll.via is not None:
            table, mine, other = coll.via
            links = self._group(table, mine).get(row[e.pk], [])
            rows = [self.store.get(x.target.logical, link[other]) for link in links]
            return [self.row(x.target, r, x.select) for r in rows if r is not None]
        assert coll.fk is not None
        return [self.row(x.target, r, x.select) for r in self._group(x.target.logical, coll.fk).get(row[e.pk], [])]

    def _group(self, table: str, column: str) -> dict[str, list[Row]]:
        """Rows of a table by the id in one of their columns (built once per request)."""
        key = (table, column)
        if key not in self._groups:
            groups: dict[str, list[Row]] = {}
            for r in self.store.rows(table).values():
                v = r.get(column)
                if v is not None:
                    groups.setdefault(v.id if isinstance(v, Ref) else v, []).append(r)
            self._groups[key] = groups
        return self._groups[key]


def context_fragment(e: Entity, select: list[Column] | None, expand: list[Expansion]) -> str:
    parts = [c.web_name for c in select or []]
    for x in expand:
        inner = ",".join(c.web_name for c in x.select or [])
        parts.append(f"{x.name}({inner})")
    return f"{e.set_name}({','.join(parts)})" if parts else e.set_name
