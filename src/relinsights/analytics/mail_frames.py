"""Graph mail rows -> email activities as frames (frames.py): activities.py's email rules as column operations.

A year of a tenant's mail is millions of message copies; built one Python object at a time they were most
of a KPI run's time and memory. Here the same rules (activities.py: its docstring lists them) run as
joins and group-bys over two frames as the database holds them:

- `messages` (`MAIL_SCHEMA`): one row per Graph message copy, `sent` in microseconds since the epoch (UTC);
- `recipients` (`RECIPIENT_SCHEMA`): its To/Cc/Bcc rows, in their order (Bcc is never read).

Addresses are resolved once per distinct raw address, in Python, by the object builder's own resolver.
Keys that a CRM-tracked copy also has are left to the object builder, which merges the two sources
(`split_mail`); the result is then the same as building every copy with `build_activities`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from relinsights.analytics.activities import Role
from relinsights.analytics.frames import (
    ACT_SCHEMA,
    CODED,
    PART_SCHEMA,
    PERSON,
    PY_SPACE,
    ROLE,
    SIDE_EXTERNAL,
    SIDE_IGNORED,
    SIDE_INTERNAL,
    ActivityFrames,
    SourceRows,
    as_python,
    at_us,
    pair_key,
    people_of,
    repeated,
    sorted_order,
    split_keys,
    unbracketed,
    us,
)
from relinsights.analytics.parties import PartyRules
from relinsights.analytics.sources import MailMessage

MAIL_SCHEMA = pl.Schema(
    {
        "m": pl.Int64(),  # the copy's row id (any unique number)
        # The Graph id: needed only where the internetMessageId cannot key the copy (the database read leaves
        # it out elsewhere). `source`: distinct numbers that order the copies of a message held by one owner
        # as their Graph ids do (code point order), which decides between them (its sender, the order of its
        # recipients); a rank of every Graph id does. Null where unknown (the database read's): the build
        # finds it, reading the Graph ids of those copies alone (`with_sources`).
        "graph_id": pl.String(),
        "source": pl.Int64(),
        # Addresses as categoricals (CODED): a year of mail has a few hundred thousand, most in many rows (as
        # strings, a view of 16 bytes a row: 0.17 GiB of the read at 2,000,000 activities, with the recipients').
        "mailbox": CODED,  # the mailbox owner's address
        "sent": pl.Int64(),
        "is_draft": pl.Boolean(),
        "from_address": CODED,
        "sender_address": CODED,
        "internet_message_id": pl.String(),
        "conversation_id": pl.String(),
        "in_reply_to": pl.String(),
        "references": pl.List(pl.String()),
    }
)
RECIPIENT_SCHEMA = pl.Schema({"m": pl.Int64(), "role": CODED, "address": CODED})
_FROM, _TO, _CC = ROLE[Role.FROM], ROLE[Role.TO], ROLE[Role.CC]
_IDS = pl.List(pl.String())
_KEYED = "email:"  # what every email activity's key starts with
RECIPIENTS_CHUNK = 1_000_000  # activities whose recipients are put in order at a time


def _uncoded(schema: pl.Schema) -> pl.Schema:
    return pl.Schema({name: pl.String() if kind == CODED else kind for name, kind in schema.items()})


@dataclass
class MailRows(SourceRows):
    """Graph message copies and their To/Cc rows: the two frames the builder reads (it takes them).

    Empty (as a builder leaves it), its addresses are strings: a column of CODED, even without rows, would keep
    the read's categories alive to the end of the run (every address of a year of mail: 23 MiB at 2,000,000
    activities), and the builder codes strings as it reads them (`coded_alike`)."""

    messages: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_uncoded(MAIL_SCHEMA)))
    recipients: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=_uncoded(RECIPIENT_SCHEMA)))

    def objects(self) -> list[MailMessage]:
        """The rows as `MailMessage` objects (checks and tests)."""
        return mail_objects(self.messages, self.recipients)


def mail_rows(messages: Iterable[MailMessage]) -> MailRows:
    """`MailMessage` objects as the two frames (tests, and callers that hold objects)."""
    cols: dict[str, list[object]] = {c: [] for c in MAIL_SCHEMA}
    rcols: dict[str, list[object]] = {c: [] for c in RECIPIENT_SCHEMA}
    for i, msg in enumerate(messages):
        cols["m"].append(i)
        cols["graph_id"].append(msg.graph_id)
        cols["source"].append(None)  # ranked below
        cols["mailbox"].append(msg.mailbox)
        cols["sent"].append(us(msg.sent_at) if msg.sent_at is not None else None)
        cols["is_draft"].append(msg.is_draft)
        cols["from_address"].append(msg.from_address)
        cols["sender_address"].append(msg.sender_address)
        cols["internet_message_id"].append(msg.internet_message_id)
        cols["conversation_id"].append(msg.conversation_id)
        cols["in_reply_to"].append(msg.in_reply_to)
        cols["references"].append(list(msg.references))
        for role, addresses in (("to", msg.to), ("cc", msg.cc), ("bcc", msg.bcc)):
            for address in addresses:
                rcols["m"].append(i)
                rcols["role"].append(role)
                rcols["address"].append(address)
    frame = pl.DataFrame(cols, schema=MAIL_SCHEMA).with_columns(
        source=pl.col("graph_id").rank("ordinal").cast(pl.Int64)
    )
    return MailRows(frame, pl.DataFrame(rcols, schema=RECIPIENT_SCHEMA))


ID_CHUNK = 250_000
ID_THREADS = 2  # chunks of ids normalised at a time


def normalise_ids(values: pl.Series) -> pl.Series:
    """activities.normalise_message_id of each value: no angle brackets or spaces, lower case, then one pair
    of brackets (null when nothing is left).

    ID_CHUNK values at a time (ID_THREADS chunks at once): each step makes a new column of strings, two alive
    at once, and over a whole year's message ids that was the run's peak (2,000,000 activities: 1,428 MiB,
    40 over the next place)."""
    if values.len() > ID_CHUNK:
        with ThreadPoolExecutor(ID_THREADS) as pool:  # (polars' string steps run on one core each)
            chunks = (values.slice(i, ID_CHUNK) for i in range(0, values.len(), ID_CHUNK))
            return pl.concat(list(pool.map(normalise_ids, chunks)))
    # Most ids are bracketed already, in ASCII, with no space or bracket just inside the brackets: the steps
    # below only lower-case them, which is done alone (one pass over their bytes instead of five: 0.7-0.9 ->
    # 0.4-0.5 s for 2,279,293 ids). The others take the steps.
    plain = pl.select(_plain_id(pl.lit(values)).fill_null(False)).to_series()
    out = values.str.to_lowercase()
    if not plain.all():
        rest = ~plain
        out = out.scatter(rest.arg_true(), _normalised_ids(values.filter(rest)))
    return out


_EDGES = pl.Series(list(PY_SPACE + "<>"), dtype=pl.String).implode()


def _plain_id(v: pl.Expr) -> pl.Expr:
    """Whether an id is "<" + something + ">" in ASCII, whose first and last characters are no space or bracket."""
    return (
        v.str.starts_with("<")
        & v.str.ends_with(">")
        & (v.str.len_bytes() >= 3)
        & (v.str.len_bytes() == v.str.len_chars())
        & ~v.str.slice(1, 1).is_in(_EDGES)
        & ~v.str.slice(-2, 1).is_in(_EDGES)
    )


def _normalised_ids(values: pl.Series) -> pl.Series:
    value = as_python(
        values,
        unbracketed,
        lambda v: v.strip().strip("<>").strip().lower(),
    )
    return pl.select(
        pl.when(value.str.len_bytes() > 0).then(pl.concat_str(pl.lit("<"), value, pl.lit(">")))
    ).to_series()


def with_keys(messages: pl.DataFrame, keep: Collection[str] = ()) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(each copy with its activity key (activities._graph_mail: `gid`, "email:" and its normalised message id,
    else "email:graph:" and its Graph id: `message_id` gives the id back) and the ids it replies to
    (In-Reply-To, then References), normalised; the raw internetMessageIds (m, internet_message_id) of the
    copies whose key is in `keep`).

    The raw internetMessageIds are taken out of `messages` (in place) and let go ID_CHUNK at a time as they
    are normalised: a year of them as read and as normalised, both whole, were the mail build's peak (0.2 GB
    more at 2,000,000 activities). Only the copies the object builder takes (`split_mail`) keep theirs."""
    reply = normalise_ids(messages.get_column("in_reply_to"))
    refs = messages.get_column("references")
    if refs.list.len().sum():  # (never from the database: it keeps In-Reply-To only)
        rows = refs.to_frame("r").with_row_index("i").explode("r")  # (an empty list leaves no row)
        rows = rows.with_columns(r=normalise_ids(rows.get_column("r"))).group_by("i").agg("r")
        refs = (
            pl.DataFrame({"i": pl.int_range(refs.len(), dtype=pl.UInt32, eager=True)})
            .join(rows, on="i", how="left", maintain_order="left")
            .select(pl.col("r").fill_null(pl.lit([], dtype=pl.List(pl.String))))
            .to_series()
        )
        replies = pl.concat_list(reply, refs).list.drop_nulls()
    else:  # a list made only where there is an id: concat_list and drop_nulls over every row cost 20 times more
        replies = pl.when(reply.is_not_null()).then(pl.concat_list(reply)).otherwise(pl.lit([], dtype=_IDS))
    raw = messages.drop_in_place("internet_message_id")
    starts = range(0, max(raw.len(), 1), ID_CHUNK)
    parts: list[pl.Series | None] = [raw.slice(start, ID_CHUNK) for start in starts]
    del raw
    wanted = pl.Series(sorted(keep), dtype=pl.String).implode()
    graph_ids, ids = messages.get_column("graph_id"), messages.get_column("m")

    def keyed(start: int) -> tuple[pl.Series, pl.DataFrame]:
        part, parts[start // ID_CHUNK] = parts[start // ID_CHUNK], None  # (its raw ids go with `part`, after)
        assert part is not None
        normalised = normalise_ids(part)
        by_graph_id = pl.concat_str(pl.lit(_KEYED + "graph:"), graph_ids.slice(start, normalised.len()))
        gid = pl.select(
            pl.when(normalised.is_not_null()).then(pl.concat_str(pl.lit(_KEYED), normalised)).otherwise(by_graph_id)
        ).to_series()
        del normalised
        mine = gid.is_in(wanted)
        # (the few kept as new strings: a view of the part's would keep all of its bytes)
        kept = pl.DataFrame(
            {"m": ids.slice(start, gid.len()).filter(mine), "internet_message_id": part.filter(mine).to_list()},
            schema={"m": ids.dtype, "internet_message_id": pl.String},
        )
        return gid, kept

    with ThreadPoolExecutor(ID_THREADS) as pool:  # (ID_THREADS parts at a time)
        gids, kept = zip(*pool.map(keyed, starts), strict=True)
    return messages.with_columns(gid=pl.concat(gids), replies=replies), pl.concat(kept)


def owner_ranks(who: pl.DataFrame, mailboxes: pl.Series) -> pl.Series:
    """The rank of each mailbox (its row in `who`, people_of's rows; distinct) by its owner: the person its
    address resolves to, else the address itself. The object builder's order of copies by mailbox
    (activities._Resolver.mailbox)."""
    owner = pl.coalesce(who.get_column("person").gather(mailboxes), who.get_column("raw").gather(mailboxes))
    return pl.select(owner.rank("dense")).to_series()


def _resolved(rules: PartyRules, columns: list[pl.Series]) -> tuple[pl.DataFrame, list[pl.Series]]:
    """(people_of's rows of the distinct values of `columns`; each column as its values' rows in them, null
    for null).

    The columns are categoricals of one mapping (CODED, as the database read gives them), or are coded by it
    first: their distinct values are then found among their codes, and each row's row in `who` is gathered
    by its code. A join of each column on the strings hashed every row again, and the distinct values took a
    unique of all four columns' strings at once (0.83-0.87 s for this, against 0.65-0.66, at 2,000,000
    activities; 8% fewer page faults in the build)."""
    coded = coded_alike(columns)
    distinct = pl.concat([c.unique() for c in coded]).unique().drop_nulls()
    who = people_of(rules, distinct.cast(pl.String))
    # (people_of keeps every distinct value, in order: row i is distinct[i])
    assert who.height == distinct.len()
    codes = distinct.to_physical()
    size = int(codes.to_numpy().max(initial=0)) + 1
    row_of = _by_row(codes, pl.int_range(codes.len(), dtype=pl.UInt32, eager=True), size)
    return who, [row_of.gather(c.to_physical()) for c in coded]


def coded_alike(columns: list[pl.Series]) -> list[pl.Series]:
    """The columns as categoricals of CODED (those of strings coded, each on a thread of polars' own): equal
    values have equal codes in all of them."""
    if all(c.dtype == CODED for c in columns):
        return columns
    return [
        frame.to_series()
        for frame in pl.collect_all([pl.LazyFrame({"v": c}).select(pl.col("v").cast(CODED)) for c in columns])
    ]


def _by_row(at: pl.Series, values: pl.Series, size: int) -> pl.Series:
    """A column of `size` rows holding each of `values` at its row `at`, null elsewhere: a look-up by row."""
    return pl.repeat(None, size, dtype=values.dtype, eager=True).scatter(at, values)


# (row id, Graph id) of the message copies of these row ids that are still stored.
GraphIds = Callable[[list[int]], Iterable[tuple[int, str]]]
_SOURCE_SEED = 0x50C7  # (any: the hashes are compared within one build)


def with_sources(keyed: pl.DataFrame, rules: PartyRules, graph_ids: GraphIds | None) -> pl.DataFrame:
    """`keyed` (with_keys' copies) with every `source` known. Where one is not (the database read's), each
    copy's is its row id, or, where one owner holds several copies of one message (a message sent to
    oneself: in Sent Items and in the Inbox), their Graph ids' rank in code point order, above every row id:
    only those copies' Graph ids are read (`graph_ids`). Ranking a year's Graph ids in SQL was a sort of
    152-character ids, the read's costliest query (3.2 s of SQLite's time at 2,000,000 activities). A copy
    gone before its Graph id is read is left out (the next run reads it as it is then).

    The copies are found by a hash of their owner and key: one that only shares the hash is ranked with
    them, which keeps its own message's copies in their order."""
    if not keyed.get_column("source").has_nulls():
        return keyed
    if graph_ids is None:
        raise ValueError("mail copies without a source need a way to read their Graph ids (graph_ids)")
    (mailbox,) = coded_alike([keyed.get_column("mailbox")])
    mailboxes = mailbox.unique().drop_nulls()  # (a few: resolved once each, and looked up by their codes)
    who = people_of(rules, mailboxes.cast(pl.String))  # (row i is mailboxes[i])
    ranks = owner_ranks(who, pl.int_range(who.height, dtype=pl.UInt32, eager=True))
    codes = mailboxes.to_physical()
    box = _by_row(codes, ranks, int(codes.to_numpy().max(initial=0)) + 1).gather(mailbox.to_physical())
    hashes = keyed.get_column("gid").hash(_SOURCE_SEED) ^ box.hash(_SOURCE_SEED)
    several = repeated(hashes)
    ids = keyed.get_column("m")
    if not several.any():
        return keyed.with_columns(source=ids)
    wanted = pl.DataFrame({"i": several.arg_true(), "m": ids.filter(several)})
    read = list(graph_ids(wanted.get_column("m").to_list()))
    last = ids.max()
    assert isinstance(last, int)
    ranked = (
        pl.DataFrame(read, schema={"m": ids.dtype, "graph_id": pl.String}, orient="row")
        .sort("graph_id", "m")  # (polars orders strings by their bytes: UTF-8's is code point order)
        .select("m", rank=pl.int_range(pl.len(), dtype=pl.Int64) + last + 1)
    )
    wanted = wanted.join(ranked, on="m", how="left")
    keyed = keyed.with_columns(source=ids.scatter(wanted.get_column("i"), wanted.get_column("rank")))
    # (a filter copies every column: only when a copy went)
    return keyed.filter(pl.col("source").is_not_null()) if len(read) < wanted.height else keyed


def split_mail(
    messages: pl.DataFrame,
    recipients: pl.DataFrame,
    crm_keys: Collection[str],
    rules: PartyRules,
    graph_ids: GraphIds | None = None,
) -> tuple[pl.DataFrame, list[MailMessage]]:
    """(the copies the frame builder takes, as `with_keys` gives them, with their sources (`with_sources`);
    the copies of keys a CRM copy also has, as `MailMessage` objects for the object builder). The raw
    message ids are taken out of `messages`."""
    keyed, raw_ids = with_keys(messages, crm_keys)
    keyed = with_sources(keyed, rules, graph_ids)
    keyed, shared = split_keys(keyed, crm_keys, "gid")
    keyed = keyed.drop("in_reply_to", "references")  # (the frame builder reads the normalised ids)
    if not shared.height:
        return keyed, []
    return keyed, mail_objects(shared.join(raw_ids, on="m", how="left", maintain_order="left"), recipients)


def mail_objects(messages: pl.DataFrame, recipients: pl.DataFrame) -> list[MailMessage]:
    """Message rows as `MailMessage` objects (the few the object builder merges with CRM copies; tests)."""
    ids = messages.get_column("m").implode()
    by_message: dict[int, dict[str, list[str]]] = {}
    for m, role, address in recipients.filter(pl.col("m").is_in(ids)).iter_rows():
        by_message.setdefault(m, {}).setdefault(role, []).append(address)
    out = []
    for row in messages.iter_rows(named=True):
        r = by_message.get(row["m"], {})
        out.append(
            MailMessage(
                # (a copy read without its Graph id: a stand-in that sorts as it does among the copies read, by
                # its source, or its row id before the build has found its source)
                graph_id=row["graph_id"] if row["graph_id"] is not None else f"~{row['source'] or row['m']:019d}",
                mailbox=row["mailbox"],
                sent_at=at_us(row["sent"]) if row["sent"] is not None else None,
                from_address=row["from_address"],
                sender_address=row["sender_address"],
                to=tuple(r.get("to", ())),
                cc=tuple(r.get("cc", ())),
                bcc=tuple(r.get("bcc", ())),
                internet_message_id=row["internet_message_id"],
                conversation_id=row["conversation_id"],
                in_reply_to=row["in_reply_to"],
                references=tuple(row["references"] or ()),
                is_draft=row["is_draft"],
            )
        )
    return out


def _places(box: pl.Series, source: pl.Series) -> pl.Series:
    """Each copy's place in (mailbox, source) order, from 0 (a mailbox's Graph ids are distinct: no ties).

    The order turned into places by one scatter: a second sort for the places, after a sort by the two columns,
    took 1.1-1.2 s for 2,279,293 copies, this with `sorted_order` 0.15-0.17 s."""
    order = sorted_order(pl.DataFrame({"box": box, "source": source}), "box", "source")
    places = np.empty(order.len(), np.uint32)
    places[order.to_numpy()] = np.arange(order.len(), dtype=np.uint32)
    return pl.Series(places)


def _maybe_shared(keys: pl.Series) -> pl.Series:
    """Whether each key may have other copies: its hash repeats (a quarter of the time of the strings' own).
    Equal keys hash equal, and a key that only shares its hash is grouped alone, to the very row it is taken
    as when alone."""
    return repeated(keys.hash())


def _merged(copies: pl.DataFrame) -> pl.DataFrame:
    """One row per message (`gid`) from its copies: its time, message id, conversations, the ids it replies to,
    its copies (`ms`) and its sender (its row in `who`, its number and kind: those of its first copy in primary
    order, `prank`, that names one); in no particular order.

    Most messages have one copy, taken as it is, and only the others are grouped. Grouping every copy (a
    hash table and a list of rows per message, then the aggregates' columns), then joining on the sender's
    copy (which gathered every aggregated row again) took this step to 1,793 MiB at 2,000,000 activities;
    this, to 1,508."""
    shared = _maybe_shared(copies.get_column("gid"))
    named = pl.col("s_pid").is_not_null()
    replies = pl.col("replies")
    if copies.select((replies.list.len() > 1).any()).item():  # (only References can repeat an id)
        replies = replies.list.drop_nulls().list.unique(maintain_order=True)
    one = (
        copies.lazy()
        .filter(~shared)
        .select(
            "gid",
            t="sent",
            conversations=pl.when(pl.col("conv").is_not_null())
            .then(pl.concat_list("conv"))
            .otherwise(pl.lit([], _IDS)),
            reply_to=replies,
            ms=pl.concat_list("m"),
            w=pl.when(named).then(pl.col("s_w")),
            s_pid="s_pid",
            kind=pl.when(named).then(pl.col("s_kind")),
        )
    )

    # Messages of several copies, grouped by their keys. A message's lists come in its copies' source order:
    # only those of two ids or more can tell, and they are made again from their copies sorted (few: a
    # message's copies share their conversation and the ids it replies to). The sender's copy is found by its
    # place, `prank`, which numbers every copy. (A sort within every group for the lists, and of each
    # message's named copies for each of the sender's three columns, took 0.6-1.1 s at 2,000,000 activities,
    # against 0.2; sorting all the copies by source first, 0.6 s more and the build's peak 18 MiB higher.)
    lists = {
        "conversations": pl.col("conv").drop_nulls().unique(maintain_order=True),
        "reply_to": pl.col("replies").explode().drop_nulls().unique(maintain_order=True),
    }
    several = (
        copies.lazy()
        .filter(shared)
        .group_by("gid")
        .agg(t=pl.col("sent").min(), **lists, ms="m", first=pl.when(named).then(pl.col("prank")).min())
        .collect()
    )
    mixed = several.filter((pl.col("conversations").list.len() > 1) | (pl.col("reply_to").list.len() > 1))
    if mixed.height:
        ordered = copies.lazy().join(mixed.lazy().select("gid"), on="gid", how="semi").sort("source")
        several = several.update(ordered.group_by("gid").agg(**lists).collect(), on="gid")
    del mixed
    row = pl.int_range(copies.height, dtype=pl.UInt32, eager=True)
    at = _by_row(copies.get_column("prank"), row, copies.height).gather(several.get_column("first"))  # (null: none)
    several = several.drop("first").with_columns(
        w=copies.get_column("s_w").gather(at),
        s_pid=copies.get_column("s_pid").gather(at),
        kind=copies.get_column("s_kind").gather(at),
    )
    del row, at
    # A copy's message id is its key's (all of a message's copies have it), as a view of the key's bytes: kept
    # as a column of its own through the build, it held them twice.
    merged = pl.concat([one.collect(), several])
    return merged.with_columns(message_id(merged.get_column("gid")))


def message_id(keys: pl.Series) -> pl.Series:
    """The normalised message id of each email key (`with_keys`' `gid`), null for one keyed by its Graph id
    (normalised ids start with "<")."""
    return pl.select(
        pl.when(keys.str.starts_with(_KEYED + "<")).then(keys.str.slice(len(_KEYED))).alias("message_id")
    ).to_series()


def build_mail_frames(
    mail: MailRows,
    crm_keys: Collection[str],
    rules: PartyRules,
    skipped: Counter[str],
    graph_ids: GraphIds | None = None,
) -> tuple[ActivityFrames, list[MailMessage]]:
    """(the email activities of the copies whose keys no CRM copy has, merged by key; those other copies as
    `MailMessage` objects, for the object builder): `split_mail` and the build. Skipped rows counted.
    The rows are taken out of `mail`; `graph_ids` reads the Graph ids its copies are read without (`source`
    unknown). The activities are a piece for `ActivityFrames.combine`: their participants are not yet grouped
    by activity (combine groups them)."""
    messages, recipients = mail.take()
    # (a frame of its own, which split_mail takes the raw message ids out of: a caller may still hold the one
    # it read, and its ids)
    copies = messages.clone()
    del messages
    keyed, tracked = split_mail(copies, recipients, crm_keys, rules, graph_ids)
    rows = MailRows(keyed, recipients)  # the messages with their keys
    del copies, keyed, recipients
    return _build(rows, rules, skipped), tracked


def _build(rows: MailRows, rules: PartyRules, skipped: Counter[str]) -> ActivityFrames:
    # Nothing else holds the two frames now: each `del` below frees a year of rows.
    keyed, recipients = rows.take()
    drafts, no_time = keyed.select(
        pl.col("is_draft").sum(), (pl.col("sent").is_null() & ~pl.col("is_draft")).sum()
    ).row(0)
    skipped["draft"] += drafts
    skipped["no-time"] += no_time
    # A filter copies every column: a year of mail read from the database has nothing to drop here.
    copies = keyed.filter(~pl.col("is_draft") & pl.col("sent").is_not_null()) if drafts or no_time else keyed
    del keyed
    if copies.height == 0:
        return ActivityFrames.empty()

    # Lazy chains below: each join would otherwise gather every column of a year of mail, only to drop most.
    # Bcc is never a participant (the database read leaves it out already). Rows of other messages (drafts,
    # copies the object builder takes) are dropped by the join with the copies further on.
    to_cc = pl.col("role").is_in(["to", "cc"])
    recips = recipients if recipients.select(to_cc.all()).item() else recipients.filter(to_cc)
    # Each address as its row in `who` (`w`), by a code of its own: see `_resolved`.
    who, (mailbox_w, from_w, sender_w, address_w) = _resolved(
        rules,
        [copies.get_column(c) for c in ("mailbox", "from_address", "sender_address")] + [recips.get_column("address")],
    )
    # People are compared and grouped by a number of their own (`pid`), not by their strings.
    who = who.with_columns(pid=pl.col("person").rank("dense").cast(pl.Int32))
    pid, kind = who.get_column("pid"), who.get_column("kind")

    # The recipients resolved before the copies are merged: each row's person as its row in `who` (`w`), with
    # its number and side, and To or Cc as a number, instead of the read's strings (which were 0.07 GB more
    # through the merge and the recipients' sort further on, at 2,000,000 activities). `seq`: read order,
    # each message's recipients in their lists' order. Its strings (person, address) are gathered once, at
    # the end, not carried through the sort.
    recips = recips.select(
        pl.int_range(pl.len(), dtype=pl.UInt32).alias("seq"),
        "m",
        w=address_w,
        pid=pid.gather(address_w),
        kind=kind.gather(address_w),
        role=pl.when(pl.col("role") == "to").then(pl.lit(_TO)).otherwise(pl.lit(_CC)).cast(pl.Int8),
    ).filter(pl.col("pid").is_not_null() & (pl.col("kind") != SIDE_IGNORED))
    del recipients, address_w

    # A mailbox is ordered by its owner (the person it resolves to, else its own string): ranked once per
    # mailbox, not once per copy.
    boxes = mailbox_w.unique().drop_nulls()
    box = _by_row(boxes, owner_ranks(who, boxes), who.height).gather(mailbox_w)
    del boxes, mailbox_w

    # A copy's sender: its from address when that resolves, else its sender address.
    # Copies in source order (MAIL_SCHEMA's `source`) give the conversations and replies (an order only
    # threads read); in (mailbox, source) order ("primary", `prank`) the sender, message id and recipients.
    # Ranks and sorts within each message, not sorts of the whole year of copies.
    # (The Graph ids and the raw addresses are not kept: nothing else holds the read's copies.)
    s_w = pl.select(pl.when(pid.gather(from_w).is_not_null()).then(from_w).otherwise(sender_w)).to_series()
    sent_by = pl.DataFrame({"box": box, "s_w": s_w, "s_kind": kind.gather(s_w), "s_pid": pid.gather(s_w)})
    del box, s_w, from_w, sender_w
    copies = (
        copies.select(
            "m",
            "gid",
            "source",
            "sent",
            # The conversation id's own string: "graph:" goes before it once per activity, further on.
            conv=pl.when(pl.col("conversation_id") != "").then(pl.col("conversation_id")),
            replies="replies",
        )
        .with_columns(sent_by)
    )
    copies = copies.with_columns(prank=_places(copies.get_column("box"), copies.get_column("source"))).drop("box")
    del sent_by
    # Conversation ids are views of the read's strings, message ids of the keys' (`gid`, which become the
    # activities' keys as they are); copies are told their activity by number (`ms`), not by joining on the
    # key again.
    acts = _merged(copies)
    copies = copies.select("m", "prank")  # all the recipients need of them
    skipped["no-sender"] += acts.filter(pl.col("w").is_null()).height
    acts = acts.filter(pl.col("w").is_not_null())
    skipped["ignored-sender"] += acts.filter(pl.col("kind") == SIDE_IGNORED).height
    acts = acts.filter(pl.col("kind") != SIDE_IGNORED).with_row_index("a")
    numbered = acts.height  # the numbers the participants are told (some dropped further on)

    # Recipients in primary order, To before Cc, list order; each person once, the sender not again. Made for
    # a range of activities at a time, in order (`a` is the row): the joins' tables and the sort of all at
    # once were the build's peak (2,000,000 activities: 0.27 GB over what came before; by halves 0.19). By
    # polars' streaming engine, which holds less of them at once than the in-memory one the run prefers
    # (relinsights/__init__.py): the build's peak 934 MiB against 945, in the same time.
    copies_of = acts.select("a", "s_pid", m="ms")
    recips = pl.concat(
        [
            recips.lazy()
            .join(copies.lazy().join(copies_of.slice(start, RECIPIENTS_CHUNK).lazy().explode("m"), on="m"), on="m")
            .filter(pl.col("pid") != pl.col("s_pid"))
            .sort("a", "prank", "role", "seq")
            .filter(pair_key(pl.col("a"), pl.col("pid")).is_first_distinct())  # (half a unique's time on two columns)
            .select("a", "w", internal=pl.col("kind") == SIDE_INTERNAL, role="role")
            .collect(engine="streaming")
            for start in range(0, max(copies_of.height, 1), RECIPIENTS_CHUNK)
        ]
    )
    del copies_of
    # People and addresses gathered as categoricals (frames.PERSON): as strings, each row held a copy.
    person, address = (who.get_column(c).cast(PERSON) for c in ("person", "address"))
    recips = recips.select(
        "a",
        person.gather(recips.get_column("w")),
        "internal",
        "role",
        address.gather(recips.get_column("w")),
    )
    # Whether an activity has recipients of ours, of theirs: tallied by its number, which is its row (a group
    # by and a join gathered every column of the activities again, lists included: 1.2 s at 2,000,000).
    a, internal = recips.get_column("a").to_numpy(), recips.get_column("internal")
    any_internal, any_external = (
        pl.Series(np.bincount(a[side.fill_null(False).to_numpy()], minlength=numbered) > 0)
        for side in (internal, ~internal)
    )
    del a, internal
    acts = acts.with_columns(
        dir=pl.when((pl.col("kind") == SIDE_INTERNAL) & any_external)
        .then(pl.lit(0))
        .when((pl.col("kind") == SIDE_EXTERNAL) & any_internal)
        .then(pl.lit(1))
        .cast(pl.Int8)
    )
    skipped["no-direction"] += acts.filter(pl.col("dir").is_null()).height
    acts = acts.filter(pl.col("dir").is_not_null())

    sender = acts.get_column("w")
    senders = acts.select(
        "a",
        person=person.gather(sender),
        internal=pl.col("kind") == SIDE_INTERNAL,
        role=pl.lit(_FROM, dtype=pl.Int8),
        address=address.gather(sender),
    )
    del sender
    parts = pl.concat([senders, recips], how="vertical_relaxed")  # each activity's sender before its recipients
    del senders, recips
    # The conversations (views into the read's buffers) replaced, and let go, before the keys are made: both
    # at once held 0.2 GB more (2,000,000 activities; this step then peaked at 1.75 GB, now 1.55).
    acts = acts.with_columns(
        conversations=pl.col("conversations").list.eval(pl.concat_str(pl.lit("graph:"), pl.element()))
    )
    out = acts.select(
        key="gid",
        kind=pl.lit(0, dtype=pl.Int8),
        dir="dir",
        t="t",
        end="t",
        dur=pl.lit(0.0),
        all_day=pl.lit(False),
        pending=pl.lit(False),
        message_id="message_id",
        conversations="conversations",
        reply_to="reply_to",
        regarding=pl.lit([], dtype=pl.List(pl.String)),
        old="a",
    ).with_row_index("a")
    del acts
    # Activities renumbered densely (some were dropped; ActivityFrames.combine sorts them by (time, key)): a
    # participant's new number by lookup (-1: its activity was dropped; a join gathered the rows twice).
    # Not grouped by activity here: combine's stable sort groups every piece's participants, and keeps each
    # activity's sender (all senders come first) before its recipients in their order. Sorted here as well,
    # the participants of 2,000,000 activities were sorted twice, and this place was the build's second
    # highest (1,367 MiB).
    old = out.get_column("old").to_numpy()
    numbers = np.full(numbered, -1, dtype=np.int32)
    numbers[old] = np.arange(len(old), dtype=np.int32)
    parts = parts.select(
        a=pl.Series(numbers).gather(parts.get_column("a")),
        person="person",
        internal="internal",
        role="role",
        address="address",
        party=pl.lit(None, dtype=pl.String),
        attended=pl.lit(True),
    ).filter(pl.col("a") >= 0)
    return ActivityFrames(out.drop("a", "old").cast(ACT_SCHEMA), parts.cast(PART_SCHEMA))
