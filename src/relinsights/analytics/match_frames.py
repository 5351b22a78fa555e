"""Activities -> CRM records as polars joins over `ActivityFrames`: what `match_activities` gives, column-wise.

`match_activities` (matching.py) is the reference and states the rules; this module computes the same
`MatchResult` without making one Python object per activity or participant:

1. Every record the index knows gets an integer code, entity by entity in `RecordRef` order (account,
   contact, lead, opportunity; ids sorted), so an entity is a range of codes and sorting by code is sorting
   by RecordRef.
2. What an address gives depends on the address only: the contacts and leads at it (and what a contact
   leads to: its account, its opportunities) are one table made from the index's dictionaries, per CRM
   record; the account owning its domain (or the shared domain) comes from `RecordIndex.domain_owner`, asked
   once per distinct domain. A party adds its own rows, once per distinct (address, party) pair. Joined to the external participants
   they are every hit: (record, activity, person, reason bit); `regarding` adds hits of nobody.
3. Hits sorted by (record, activity) are runs, one per link: numpy reduces each run to a reason bitmask and
   its least and greatest member (equal when it has one, as nearly all do; only links with several get a
   list). The internal-set rules and the opportunity window clear a link's participant reasons, per link.
4. Distinct (reasons, members) shapes become Python objects once each, numbered in order of first use as
   `match_activities` numbers them; the links, already in (record, activity) order, become the
   `LinkTable`'s (position, shape) arrays, one slice of one buffer per record.
"""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
import polars as pl

from relinsights.analytics.activities import Activity
from relinsights.analytics.frames import PERSON, ActivityFrames, run_starts, us
from relinsights.analytics.matching import (
    ACCOUNT_CONTACT,
    ACCOUNT_DOMAIN,
    ACCOUNT_PARTY,
    CONTACT_EMAIL,
    CONTACT_PARTY,
    LEAD_EMAIL,
    LEAD_PARTY,
    REASONS,
    REGARDING,
    AmbiguousDomain,
    LinkTable,
    MatchResult,
    RecordIndex,
)
from relinsights.analytics.records import Entity, RecordRef
from relinsights.analytics.timeutil import as_utc

_REASONS = sorted(REASONS)
# Bits in the reasons' sorted order, so a mask's set bits, low to high, are its sorted reasons tuple.
BIT = {reason: 1 << i for i, reason in enumerate(_REASONS)}
_MASK = pl.UInt16()
_CODE = pl.UInt32()
_PID = pl.UInt32()
_NOBODY = (1 << 32) - 1  # the pid of a `regarding` hit
_INTERNAL = pl.col("internal").fill_null(False)
# One integer per (record, activity) pair, ordered as (record, activity): code * 2**32 + a.
_K = 1 << 32
_HIGH = int(sys.byteorder == "little")  # where a uint64's high half lies, as two uint32: second on little-endian
_MASK_SPAN = 1 << 16  # a shape key is member key * _MASK_SPAN + mask
# LinkTable rows are array('I'); the buffer is filled with numpy integers of the same width.
_ROW_DTYPE = np.dtype(f"=u{array('I').itemsize}")

# People and addresses as the participant frames hold them (categoricals: frames.PERSON), to join on them.
_STAFF_SCHEMA: dict[str, pl.DataType] = {"person": PERSON, "uid": pl.UInt32()}
_PEOPLE_SCHEMA: dict[str, pl.DataType] = {"code": _CODE, "uid": pl.UInt32()}
_HIT_SCHEMA: dict[str, pl.DataType] = {"address": PERSON, "code": _CODE, "bit": _MASK}
_PARTY_SCHEMA: dict[str, pl.DataType] = {"address": PERSON, "party": pl.String(), "code": _CODE, "bit": _MASK}

_Shape = tuple[tuple[str, ...], frozenset[str]]
_Hit = tuple[int, int]  # (record code, reason bit)
_Ints = npt.NDArray[np.int64]


def match_frames(frames: ActivityFrames, index: RecordIndex, activities: Sequence[Activity]) -> MatchResult:
    """`match_activities(activities, index)`, computed from `frames` (row i of `frames.acts` is activities[i]).

    `activities` is only handed to the LinkTable (it is often lazy, e.g. `FrameActivities`): never read here.
    """
    tables = _Tables(index)
    # `if p.address`: an empty address is none.
    address = pl.when(pl.col("address") != "").then(pl.col("address")).alias("address")
    ext = frames.parts.lazy().filter(~_INTERNAL).select("a", "person", address, "party").collect()
    # Members are compared as integers; `persons[pid]` is the person.
    persons = ext.get_column("person").unique(maintain_order=True)
    person_ids = pl.DataFrame({"person": persons, "pid": pl.int_range(len(persons), dtype=_PID, eager=True)})
    pids = ext.select("person").join(person_ids, on="person", how="left", maintain_order="left").get_column("pid")
    ext = ext.select("a", pids, "address", "party")

    owners = _domain_owners(ext.get_column("address").drop_nulls().unique(), index, tables)
    hits = _hits(ext, owners, frames.acts, index, tables)
    counts = dict(
        ext.join(owners.filter(pl.col("dom").is_not_null()), on="address")
        .select("a", "dom")
        .unique()
        .group_by("dom")
        .len()
        .iter_rows()
    )
    # Each step's arrays are let go as soon as the next is made (millions of links: held to the end, they
    # took matching 0.26 GB higher at 2,000,000 activities).
    del ext, owners
    links = _Links.of(hits)
    links.keep(_clear_failed(links, frames, tables))
    sets, set_of = _members(links, hits)
    del hits
    # A shape key: member * _MASK_SPAN + mask, member 0 for nobody, 1 + pid for one person, 1 + len(persons) + i
    # for the i-th set of several. (Made in place in one array: each step's own copy was fresh pages again.)
    shape = links.lo.astype(np.uint64)
    shape += np.uint64(1)
    shape[links.lo == _NOBODY] = 0
    several = np.flatnonzero(set_of >= 0)
    shape[several] = set_of[several].astype(np.uint64) + np.uint64(1 + len(persons))
    del set_of, several
    shape *= np.uint64(_MASK_SPAN)
    shape += links.mask
    sid, keys = _number(shape, links)
    del shape
    shapes = _shapes(keys, persons.to_list(), sets)
    rows = _rows(links, sid, tables, index)
    ambiguous = tuple(
        AmbiguousDomain(dom, ids, counts.get(dom, 0)) for dom, ids in sorted(index.shared_domains.items())
    )
    return MatchResult(LinkTable(activities, rows, shapes), ambiguous, index.identities)


class _Tables:
    """The index as frames and arrays: every record by an integer code, and what the rules need of it."""

    def __init__(self, index: RecordIndex) -> None:
        kpi = index.kpi
        # The index's known records, entity by entity (known holds exactly these ids).
        ids = {
            Entity.ACCOUNT: sorted(index.account_ids),
            Entity.CONTACT: sorted(index.contact_ids),
            Entity.LEAD: sorted(index.lead_owner),
            Entity.OPPORTUNITY: sorted(index.opportunities),
        }
        self.known: list[tuple[Entity, str]] = []
        self.span: dict[Entity, tuple[int, int]] = {}  # the entity's codes: [start, stop)
        self.code: dict[Entity, dict[str, int]] = {}
        for entity in sorted(ids, key=lambda e: e.value):
            start = len(self.known)
            self.code[entity] = {rid: start + i for i, rid in enumerate(ids[entity])}
            self.known += [(entity, rid) for rid in ids[entity]]
            self.span[entity] = (start, len(self.known))
        self.keys = pl.DataFrame(
            {"key": [f"{entity.value}:{rid}" for entity, rid in self.known]}, schema={"key": pl.String}
        ).with_row_index("code")
        # Opportunity windows, by code: [created, until] in µs, an open end as the largest time.
        opp_ids = ids[Entity.OPPORTUNITY]
        ends = [index.opp_until[oid] for oid in opp_ids]
        before = self.span[Entity.OPPORTUNITY][0]
        self.created = np.zeros(len(self.known), dtype=np.int64)
        self.until = np.zeros(len(self.known), dtype=np.int64)
        self.created[before:] = [us(as_utc(index.opportunities[oid].created_on)) for oid in opp_ids]
        self.until[before:] = [us(t) if t is not None else np.iinfo(np.int64).max for t in ends]

        # (record, an internal person of the record's own internal set), for the records that need one.
        people: list[tuple[int, str]] = []
        self.needy: list[Entity] = []
        if kpi.opportunity_requires_team:
            self.needy.append(Entity.OPPORTUNITY)
            opps = self.code[Entity.OPPORTUNITY]
            people += [(opps[oid], p) for oid in opp_ids for p in index.opp_internal[oid]]
        if kpi.lead_requires_owner:
            self.needy.append(Entity.LEAD)
            leads = self.code[Entity.LEAD]
            people += [(leads[lid], p) for lid, p in index.lead_owner.items() if p is not None]
        # Those people numbered, so the activity's internal people and the record's compare as integers.
        staff = {p: i for i, p in enumerate(dict.fromkeys(p for _, p in people))}
        self.staff = pl.DataFrame({"person": list(staff), "uid": range(len(staff))}, schema=_STAFF_SCHEMA)
        self.people = pl.DataFrame([(c, staff[p]) for c, p in people], schema=_PEOPLE_SCHEMA, orient="row")

        # address -> (record, reason bit): the contacts at it and what each leads to, the leads at it.
        self._via_contact: dict[str, list[_Hit]] = {}
        contacts, leads, accounts = self.code[Entity.CONTACT], self.code[Entity.LEAD], self.code[Entity.ACCOUNT]
        # A contact listed twice at one address (duplicate rows) gives the same hit twice: harmless, hits of
        # one link are OR-ed and their members a set.
        at = pl.DataFrame(
            [(addr, cid) for addr, cids in index.contacts_by_address.items() for cid in cids],
            schema={"address": PERSON, "cid": pl.String},
            orient="row",
        )
        leads_to = [(cid, code, BIT[CONTACT_EMAIL]) for cid, code in contacts.items()]
        leads_to += [
            (cid, accounts[acc], BIT[ACCOUNT_CONTACT])
            for cid, acc in index.contact_account.items()
            if acc in index.account_ids
        ]
        opps = self.code[Entity.OPPORTUNITY]
        leads_to += [
            (cid, opps[oid], BIT[reason]) for cid, found in index.opps_by_contact.items() for oid, reason in found
        ]
        contact_hits = at.join(
            pl.DataFrame(leads_to, schema={"cid": pl.String(), "code": _CODE, "bit": _MASK}, orient="row"), on="cid"
        ).select("address", "code", "bit")
        lead_hits = pl.DataFrame(
            [(addr, leads[lid], BIT[LEAD_EMAIL]) for addr, lids in index.leads_by_address.items() for lid in lids],
            schema=_HIT_SCHEMA,
            orient="row",
        )
        self.by_address = pl.concat([contact_hits, lead_hits])

    def of(self, entities: Sequence[Entity], codes: npt.NDArray[np.uint32]) -> npt.NDArray[np.bool_]:
        """Which of `codes` are records of these entities."""
        out = np.zeros(len(codes), dtype=np.bool_)
        for entity in entities:
            start, stop = self.span[entity]
            out |= (codes >= start) & (codes < stop)
        return out

    def via_contact(self, cid: str, index: RecordIndex) -> list[_Hit]:
        """What a contact hit adds: its parent account (when that account is present) and its opportunities."""
        found = self._via_contact.get(cid)
        if found is None:
            found = []
            acc = index.contact_account.get(cid)
            if acc is not None and acc in index.account_ids:
                found.append((self.code[Entity.ACCOUNT][acc], BIT[ACCOUNT_CONTACT]))
            opps = self.code[Entity.OPPORTUNITY]
            found += [(opps[oid], BIT[reason]) for oid, reason in index.opps_by_contact.get(cid, ())]
            self._via_contact[cid] = found
        return found


def _domain_owners(addresses: pl.Series, index: RecordIndex, tables: _Tables) -> pl.DataFrame:
    """address -> (the code of the account owning its domain, the shared domain it is in), for the addresses
    that have either.

    `RecordIndex.domain_owner` reads nothing of an address but its domain (`domain_of`: after the last "@"),
    so it is asked once per distinct domain, of one of its addresses: a year of mail has far fewer domains."""
    frame = pl.DataFrame({"address": addresses}).with_columns(
        pl.col("address").cast(pl.String).str.split("@").list.last().alias("d")
    )
    one_each = frame.group_by("d").agg(pl.col("address").first())
    found = [index.domain_owner(a) for a in one_each.get_column("address").to_list()]
    accounts = tables.code[Entity.ACCOUNT]
    owners = one_each.select("d").with_columns(
        pl.Series("acc", [accounts[r.id] if r is not None else None for r, _ in found], dtype=_CODE),
        pl.Series("dom", [d for _, d in found], dtype=pl.String),
    )
    owners = owners.filter(pl.col("acc").is_not_null() | pl.col("dom").is_not_null())
    return frame.join(owners, on="d").select("address", "acc", "dom")


def _party_hits(ext: pl.DataFrame, index: RecordIndex, tables: _Tables) -> pl.DataFrame:
    """(address, party) -> (record, reason bit) rows: what a participant's party adds to its address's hits."""
    rows: list[tuple[str | None, str, int, int]] = []
    code = tables.code
    for addr, party in ext.filter(pl.col("party").is_not_null()).select("address", "party").unique().iter_rows():
        entity, _, rid = party.partition(":")
        found: list[_Hit] = []
        if entity == Entity.CONTACT and rid in index.contact_ids:
            # Found by the address first, it stays contact-email (setdefault); its account and opportunities
            # are the address's rows already.
            if not addr or rid not in index.contacts_by_address.get(addr, ()):
                found.append((code[Entity.CONTACT][rid], BIT[CONTACT_PARTY]))
                found += tables.via_contact(rid, index)
        elif entity == Entity.ACCOUNT and rid in index.account_ids:
            found.append((code[Entity.ACCOUNT][rid], BIT[ACCOUNT_PARTY]))
        elif entity == Entity.LEAD and rid in code[Entity.LEAD]:  # ref in index.known
            found.append((code[Entity.LEAD][rid], BIT[LEAD_PARTY]))
        rows += [(addr, party, c, bit) for c, bit in found]
    return pl.DataFrame(rows, schema=_PARTY_SCHEMA, orient="row")


def _hits(
    ext: pl.DataFrame, owners: pl.DataFrame, acts: pl.DataFrame, index: RecordIndex, tables: _Tables
) -> pl.DataFrame:
    """Every (ca, pid, bit), sorted by ca: a participant's reason for a record, or a `regarding` (pid _NOBODY)."""
    by_address = pl.concat(
        [
            tables.by_address,
            owners.filter(pl.col("acc").is_not_null()).select(
                "address", pl.col("acc").alias("code"), pl.lit(BIT[ACCOUNT_DOMAIN], dtype=_MASK).alias("bit")
            ),
        ]
    )
    ca = (pl.col("code").cast(pl.UInt64) * _K + pl.col("a").cast(pl.UInt64)).alias("ca")
    # regarding: any known record the activity names, linked whatever the rules say (they clear participant
    # reasons only).
    regarding = (
        acts.lazy()
        .select(pl.int_range(pl.len(), dtype=pl.Int32).alias("a"), pl.col("regarding").alias("key"))
        .explode("key")
        .join(tables.keys.lazy(), on="key")
        .select(ca, pl.lit(_NOBODY, dtype=_PID).alias("pid"), pl.lit(BIT[REGARDING], dtype=_MASK).alias("bit"))
    )
    by_party = _party_hits(ext, index, tables).lazy()
    return (
        pl.concat(
            [
                ext.lazy().join(by_address.lazy(), on="address").select(ca, "pid", "bit"),
                ext.lazy().join(by_party, on=["address", "party"], nulls_equal=True).select(ca, "pid", "bit"),
                regarding,
            ]
        )
        .sort("ca")
        .collect()
    )


@dataclass
class _Links:
    """(record, activity) links in (record, activity) order, as arrays; hits[start:end] are a link's hits."""

    ca: npt.NDArray[np.uint64]
    mask: npt.NDArray[np.uint16]
    lo: npt.NDArray[np.uint32]  # least member pid, _NOBODY when none
    hi: npt.NDArray[np.uint32]  # greatest member pid, 0 when none
    start: _Ints
    end: _Ints

    @staticmethod
    def of(hits: pl.DataFrame) -> _Links:
        ca = hits.get_column("ca").to_numpy()
        pid = hits.get_column("pid").to_numpy()
        bit = hits.get_column("bit").to_numpy()
        if not len(ca):
            nothing = np.zeros(0, np.int64)
            return _Links(ca, np.zeros(0, np.uint16), pid, pid, nothing, nothing)
        start = run_starts(ca)
        # Regarding hits (pid _NOBODY) are nobody: the largest pid for the least member (a link of no other hit
        # keeps _NOBODY), 0 for the greatest.
        return _Links(
            ca[start],
            np.bitwise_or.reduceat(bit, start),
            np.minimum.reduceat(pid, start),
            np.maximum.reduceat(np.where(pid == _NOBODY, 0, pid), start),
            start,
            np.append(start[1:], len(ca)),
        )

    def keep(self, keep: npt.NDArray[np.bool_]) -> None:
        """Keep these links only, in place, one array at a time (all six copied at once, with the old ones
        alive, were matching's highest place: 1,303 MiB at 2,000,000 activities)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name)[keep])

    # The two halves of `ca` as they lie in memory: views, no copies (a year's 4.6 million links made copies
    # of 37 MB each, fresh pages every time; numpy's uint64 % took ten times as long again).
    @property
    def code(self) -> npt.NDArray[np.uint32]:
        return self.ca.view(np.uint32)[_HIGH::2]

    @property
    def a(self) -> npt.NDArray[np.uint32]:
        return self.ca.view(np.uint32)[1 - _HIGH :: 2]


def _clear_failed(links: _Links, frames: ActivityFrames, tables: _Tables) -> npt.NDArray[np.bool_]:
    """Clear (in place) the participant reasons of links whose internal-set rule or window fails; which links
    still have a reason."""
    code, a = links.code, links.a
    internal = frames.parts.lazy().filter(_INTERNAL)
    has_internal = np.zeros(frames.acts.height, dtype=np.bool_)
    has_internal[internal.select("a").collect().to_series().to_numpy()] = True
    rule = has_internal[a]

    # Records that need one of their own internal people (team, owner) among the activity's.
    needy = tables.of(tables.needy, code)
    if needy.any():
        present = (
            internal.join(tables.staff.lazy(), on="person")
            .select(pl.col("a").cast(pl.UInt64) * _K + pl.col("uid"))
            .collect()
            .to_series()
        )
        pairs = pl.DataFrame({"link": np.flatnonzero(needy), "code": code[needy], "a": a[needy]})
        met = (
            pairs.lazy()
            .join(tables.people.lazy(), on="code")
            .filter((pl.col("a").cast(pl.UInt64) * _K + pl.col("uid")).is_in(present.implode()))
            .select(pl.col("link").unique())
            .collect()
            .to_series()
            .to_numpy()
        )
        rule[needy] = False
        rule[met] = True

    opp = tables.of([Entity.OPPORTUNITY], code)
    t = frames.acts.get_column("t").to_numpy()[a[opp]]
    rule[opp] &= (tables.created[code[opp]] <= t) & (t <= tables.until[code[opp]])
    # Reasons that fail the rules are cleared, the members kept: `regarding` may still link the record.
    links.mask[~rule] &= BIT[REGARDING]
    return links.mask != 0


def _members(links: _Links, hits: pl.DataFrame) -> tuple[list[list[int]], _Ints]:
    """(the distinct member sets of links with several members, as sorted pids; per link the index of its set
    there, -1 for a link with one member or none)."""
    several = np.flatnonzero((links.lo != _NOBODY) & (links.lo != links.hi))
    which = np.full(len(links.ca), -1, dtype=np.int64)
    if not len(several):
        return [], which
    # Their hits: the runs hits[start:end], laid end to end.
    lengths = links.end[several] - links.start[several]
    offsets = np.repeat(links.start[several] - np.cumsum(lengths) + lengths, lengths)
    rows = offsets + np.arange(lengths.sum())
    pid = hits.get_column("pid").to_numpy()[rows]
    lists = (
        pl.DataFrame({"link": np.repeat(several, lengths), "pid": pid})
        .filter(pl.col("pid") != _NOBODY)
        .group_by("link")
        .agg(pl.col("pid").unique().sort())
    )
    distinct = lists.select("pid").unique(maintain_order=True).with_row_index("set")
    lists = lists.join(distinct, on="pid")
    which[lists.get_column("link").to_numpy()] = lists.get_column("set").to_numpy()
    return distinct.get_column("pid").to_list(), which


def _number(shape: npt.NDArray[np.uint64], links: _Links) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.uint64]]:
    """(per link its shape's index, the shapes in index order): numbered in order of first use, the order
    `match_activities` meets links in: (activity, record)."""
    first = (
        pl.DataFrame({"shape": shape, "ac": links.a.astype(np.uint64) * np.uint64(_K) + links.code.astype(np.uint64)})
        .group_by("shape")
        .agg(pl.col("ac").min())
        .sort("ac")
        .with_row_index("sid")
    )
    sid = (
        pl.DataFrame({"shape": shape})
        .join(first.select("shape", "sid"), on="shape", how="left", maintain_order="left")
        .get_column("sid")
        .to_numpy()
    )
    return sid, first.get_column("shape").to_numpy()


def _shapes(keys: npt.NDArray[np.uint64], persons: list[str], several: list[list[int]]) -> list[_Shape]:
    """The distinct (reasons, members) pairs as objects, from their keys in index order, equal tuples and sets
    shared."""
    masks, members = (keys % np.uint64(_MASK_SPAN)).tolist(), (keys // np.uint64(_MASK_SPAN)).tolist()
    why = {mask: tuple(r for r in _REASONS if mask & BIT[r]) for mask in set(masks)}
    n = len(persons)
    who = {
        m: frozenset((persons[m - 1],)) if m <= n else frozenset(persons[p] for p in several[m - 1 - n])
        for m in set(members)
        if m
    }
    who[0] = frozenset()
    return [(why[mask], who[m]) for mask, m in zip(masks, members, strict=True)]


def _rows(
    links: _Links, sid: npt.NDArray[np.uint32], tables: _Tables, index: RecordIndex
) -> dict[RecordRef, array[int]]:
    """Record -> its flat (position, shape) pairs, in activity order; records in order of their first link."""
    code, a = links.code, links.a
    flat = np.empty(2 * len(code), dtype=_ROW_DTYPE)
    flat[0::2] = a
    flat[1::2] = sid
    buf = flat.data.cast("B")
    size = flat.itemsize * 2
    starts = run_starts(code)
    ends = np.append(starts[1:], len(code))
    # Records in order of their first link: (its activity, its code).
    order = np.lexsort((code[starts], a[starts]))
    rows: dict[RecordRef, array[int]] = {}
    known = tables.known
    for start, end, c in zip(starts[order].tolist(), ends[order].tolist(), code[starts][order].tolist(), strict=True):
        row = array("I")
        row.frombytes(buf[start * size : end * size])
        entity, rid = known[c]
        rows[index.ref(entity, rid)] = row
    return rows
