"""What the importer keeps of one archived message: the metadata Graph exposes, never the body.

Parsing uses the stdlib (`email.parser.BytesHeaderParser` on the header block only, `email.utils`),
with the quirks of real archives handled here:
- **Duplicate copies** are recognised by `digest`, a hash of (From, Date, Subject, body): the Enron
  corpus gives every file its own Message-ID, even copies of one email in several folders.
- **Bcc copied from Cc** (a CMU conversion artefact): a Bcc list equal to the Cc list is dropped.
- **IMCEA addresses**: Exchange's encapsulation of foreign addresses (`IMCEANOTES-jdoe+40acme+2Ecom+40ENRON@
  ENRON.com`) is decoded to the SMTP address inside; CMU also turned such senders into a bogus internal
  From (`40enron@enron.com`) while X-From kept the encapsulated original, which is used when it decodes
  to a real address.
- **Lotus Notes names** (`Drew Fossum`, `TruOrange@aol.com@ENRON`, `Jane Doe/HOU/ECT@ECT`) in X-From are
  cleaned into display names.
- **Dates** that do not parse give `sent=None`; the importer decides which parsed dates are implausible.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parsedate_to_datetime

Party = tuple[str, str]  # (display name, lower-case address)

_PARSER = BytesHeaderParser(policy=policy.compat32)
_ADDRESS = re.compile(r"^[^@\s<>(),;:\"\[\]]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_SIMPLE_LIST = re.compile(r'^[^<>"(),;:\\]*(,[^<>"(),;:\\]*)*$')  # bare addresses only, no names or comments
_IMCEA = re.compile(r"^IMCEA[A-Z]*-(?P<body>.+)@[^@]+$", re.IGNORECASE)
_IMCEA_IN = re.compile(r"<(IMCEA[A-Z]*-[^<>]+@[^<>]+)>", re.IGNORECASE)
_HEX = re.compile(r"\+([0-9A-Fa-f]{2})")
_ANGLE = re.compile(r"<([^<>@\s]+@[^<>@\s]+)>")
_NOTES_SUFFIX = re.compile(r"@[A-Za-z][A-Za-z0-9 _-]*$")  # '@ENRON', '@ECT': a Notes domain, no dot
_SURROGATES = re.compile("[\udc80-\udcff]")  # undecodable bytes, as the parser hands them over
_QUICK = re.compile(rb"^(from|date|subject|message-id|x-folder)[ \t]*:[ \t]*([^\n]*(?:\n[ \t][^\n]*)*)", re.M | re.I)
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"?|<[^<>]*>?|\([^()]*\)?|[^,"<(]+|.', re.S)
_ENTRY = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|([^<>",;:\\@()]*?))\s*<([^<>]*)>\s*')  # Name <addr>, "Name" <addr>


class Unparseable(ValueError):
    """The file is not a mail message the importer can use (the reason says why)."""


@dataclass(slots=True)
class Envelope:
    message_id: str
    sent: datetime | None  # UTC; None when the Date header is missing or unreadable
    date_text: str
    sender: Party
    to: tuple[Party, ...]
    cc: tuple[Party, ...]
    bcc: tuple[Party, ...]
    subject: str
    digest: bytes  # same email, same digest: (From, Date, Subject, body)
    has_attachments: bool
    imcea_decoded: bool = False  # the sender was recovered from an IMCEA encapsulation
    bcc_was_cc: bool = False  # a Bcc identical to Cc was dropped
    dropped_addresses: int = 0  # recipients that are not addresses ('', 'bailey', 'kyle.')


@dataclass(slots=True, frozen=True)
class Glance:
    """What tells one file's email apart, read without the full parser: enough to skip duplicates."""

    digest: bytes  # (From, Date, Subject, body): equal for every copy of one email
    message_id: str
    x_folder: str
    head: bytes


def glance(data: bytes) -> Glance:
    head, body = _split(data)
    found: dict[bytes, bytes] = {}
    for m in _QUICK.finditer(head):
        found.setdefault(m.group(1).lower(), m.group(2))
    digest = hashlib.blake2b(digest_size=16)
    for key in (b"from", b"date", b"subject"):
        digest.update(b" ".join(found.get(key, b"").split()) + b"\x1f")
    digest.update(body.replace(b"\r\n", b"\n"))
    return Glance(digest.digest(), _btext(found.get(b"message-id", b"")), _btext(found.get(b"x-folder", b"")), head)


def parse_envelope(data: bytes, seen: Glance | None = None) -> Envelope:
    """Header metadata of one raw RFC 822 message; raises `Unparseable` when it is not mail."""
    g = seen or glance(data)
    if not g.head.strip():
        raise Unparseable("no header block")
    h = _headers(_PARSER.parsebytes(g.head))
    if not ({"from", "date", "message-id"} & h.keys()):
        raise Unparseable("no From, Date or Message-ID header: not a mail message")
    from_raw, date_raw, subject_raw = h.get("from", ""), h.get("date", ""), h.get("subject", "")
    senders, dropped = parse_addresses(from_raw)
    sender, decoded = _recover_sender(senders[0] if senders else None, h.get("x-from", ""))
    if sender is None:
        raise Unparseable(f"no sender address in From: {from_raw[:80]!r}")
    to, d_to = parse_addresses(h.get("to", ""))
    cc, d_cc = parse_addresses(h.get("cc", ""))
    bcc, d_bcc = parse_addresses(h.get("bcc", ""))
    bcc_was_cc = bool(bcc) and [a for _, a in bcc] == [a for _, a in cc]
    return Envelope(
        message_id=g.message_id,
        sent=_date(date_raw),
        date_text=date_raw,
        sender=sender,
        to=tuple(to),
        cc=tuple(cc),
        bcc=() if bcc_was_cc else tuple(bcc),
        subject=_decode_words(subject_raw),
        digest=g.digest,
        has_attachments=h.get("content-type", "").lower().startswith("multipart/mixed"),
        imcea_decoded=decoded,
        bcc_was_cc=bcc_was_cc,
        dropped_addresses=dropped + d_to + d_cc + d_bcc,
    )


# ---------------------------------------------------------------- addresses


def parse_addresses(value: str) -> tuple[list[Party], int]:
    """(name, address) pairs of an address header, IMCEA decoded; plus how many entries were not addresses."""
    if not value.strip():
        return [], 0
    if _SIMPLE_LIST.match(value):
        # CMU headers are bare comma-separated addresses; getaddresses is ten times slower on them.
        pairs = [("", a.strip()) for a in value.split(",")]
    else:
        pairs = []
        for entry in _split_list(value):
            m = _ENTRY.fullmatch(entry)
            if m:
                pairs.append(((m.group(1) or m.group(2) or "").replace('\\"', '"'), m.group(3)))
            elif _SIMPLE_LIST.match(entry):
                pairs.append(("", entry.strip()))
            else:
                pairs += getaddresses([entry])  # comments, groups, odd quoting: the stdlib's full parser
    out: list[Party] = []
    dropped = 0
    for name, addr in pairs:
        addr = addr.strip().strip("'\"").lower()
        if addr.startswith("imcea"):
            addr = decode_imcea(addr) or addr
        if not _ADDRESS.match(addr):
            dropped += 1
            continue
        out.append((_decode_words(name.strip()), addr))
    return out, dropped


def _split_list(value: str) -> list[str]:
    """Split an address list on the commas that are outside quotes, angle brackets and comments."""
    out: list[str] = []
    cur: list[str] = []
    for tok in _TOKENS.findall(value):
        if tok == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(tok)
    out.append("".join(cur))
    return [e for e in out if e.strip()]


def decode_imcea(address: str) -> str | None:
    """The SMTP address inside an IMCEA encapsulation, or None when there is none (a pure Notes name)."""
    m = _IMCEA.match(address.strip())
    if not m:
        return None
    inner = _HEX.sub(lambda h: chr(int(h.group(1), 16)), m.group("body"))
    angled = _ANGLE.search(inner)
    candidate = angled.group(1) if angled else _NOTES_SUFFIX.sub("", inner.strip().strip('"')).strip()
    candidate = candidate.strip().strip("'\"").lower()
    return candidate if _ADDRESS.match(candidate) else None


def _recover_sender(header: Party | None, x_from: str) -> tuple[Party | None, bool]:
    """The From party, with a display name from X-From, and an IMCEA-encapsulated original when CMU
    replaced it by an address of the sending organisation's own domain."""
    name = clean_display_name(x_from)
    m = _IMCEA_IN.search(x_from)
    inner = decode_imcea(m.group(1)) if m else None
    if inner is not None and (header is None or inner != header[1]):
        host = m.group(1).rsplit("@", 1)[1].lower() if m else ""
        if header is None or header[1].endswith("@" + host):
            return (name or inner, inner), True
    if header is None:
        return None, False
    return (header[0] or name or header[1], header[1]), False


def clean_display_name(x_value: str) -> str:
    """'Dean, Craig </O=ENRON/...>' -> 'Dean, Craig'; 'TruOrange@aol.com@ENRON' -> 'TruOrange@aol.com';
    'Jane Doe/HOU/ECT@ECT' -> 'Jane Doe'; '"Holly Korman" <holly@x.com>@ENRON <IMCEA...>' -> 'Holly Korman'."""
    s = x_value.strip()
    if not s:
        return ""
    s = re.sub(r"<[^<>]*>", "", s).strip()
    s = _NOTES_SUFFIX.sub("", s).strip()
    s = s.strip('"').replace('\\"', "").strip()
    if "/" in s and "@" not in s:
        s = s.split("/", 1)[0].strip()  # Notes hierarchical name: Common name/OU/Org
    return s[:128]


# ---------------------------------------------------------------- text helpers


def _split(data: bytes) -> tuple[bytes, bytes]:
    lf, crlf = data.find(b"\n\n"), data.find(b"\r\n\r\n")
    if crlf != -1 and (lf == -1 or crlf < lf):
        return data[: crlf + 2], data[crlf + 4 :]
    if lf == -1:
        return data, b""
    return data[: lf + 1], data[lf + 2 :]


_WANTED = frozenset({"from", "date", "subject", "message-id", "x-from", "to", "cc", "bcc", "content-type"})


def _headers(msg: Message) -> dict[str, str]:
    """The headers the importer reads, in one pass (the first of each name wins, as Message.get does)."""
    out: dict[str, str] = {}
    for name, value in msg.items():
        key = name.lower()
        if key in _WANTED and key not in out:
            out[key] = _text(value)
    return out


def _text(v: str | Header) -> str:
    """A header as text: Header objects (8-bit values) and undecodable bytes become plain str."""
    s = str(v) if isinstance(v, Header) else v
    if _SURROGATES.search(s):
        raw = s.encode("utf-8", "surrogateescape")
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError:
            s = raw.decode("latin-1")
    return " ".join(s.split()) if "\n" in s else s.strip()


def _btext(raw: bytes) -> str:
    try:
        s = raw.decode("utf-8")
    except UnicodeDecodeError:
        s = raw.decode("latin-1")
    return " ".join(s.split())


def _decode_words(s: str) -> str:
    if "=?" not in s:
        return s
    try:
        return str(make_header(decode_header(s)))
    except (ValueError, LookupError, UnicodeError):
        return s


def _date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        d = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if d is None:
        return None
    return d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC)
