"""Emails sent / received per external address, computed straight from the raw Enron files.

An independent check of the KPI pipeline (kpis.md sections 1, 2 and 4, emails only): the stdlib `email`
package reads the tarball, nothing of relinsights' importer or analytics is used. Where the importer
legitimately drops or rewrites something before the daemon ever sees it, the same rule is applied here,
each with a comment saying why; everything else is kpis.md's rule as written.
"""

from __future__ import annotations

import hashlib
import re
import tarfile
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesHeaderParser
from email.utils import getaddresses, parsedate_to_datetime
from pathlib import Path

from relinsights.config import DEFAULT_IGNORED_LOCALPARTS  # a tenant setting (kpis.md: `ignored_localparts`)

INTERNAL_DOMAIN = "enron.com"
_PARSER = BytesHeaderParser(policy=policy.compat32)
# Folders the daemon does not sync by default (config DEFAULT_EXCLUDED_FOLDERS: deleted items, junk,
# drafts), as the importer names CMU's folders; `calendar` items have no start or end and are not imported.
_UNSYNCED = {"deleteditems", "deleted", "trash", "junk", "junkemail", "spam", "drafts", "calendar"}
_LABEL = re.compile(r"^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$")
_IMCEA = re.compile(r"^imcea[a-z]*-(.+)@[^@]+$", re.IGNORECASE)
_IMCEA_IN = re.compile(r"<(imcea[a-z]*-[^<>]+@([^<>@]+))>", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RawEmail:
    sent: datetime
    sender: str
    recipients: tuple[str, ...]  # To and Cc, valid addresses (Bcc never counts)


def _valid(address: str) -> str | None:
    """kpis.md: 'any other syntactically valid address': one @, a local part, a DNS domain."""
    a = address.strip().strip("<>'\"").lower()
    if a.count("@") != 1 or any(c.isspace() for c in a):
        return None
    local, domain = a.split("@")
    labels = domain.split(".")
    if not local or len(labels) < 2 or not all(_LABEL.match(x) for x in labels):
        return None
    return a


def _decode_imcea(address: str) -> str | None:
    """Exchange encapsulates foreign addresses as IMCEA<type>-<address, '+hh' escaped>@<host>; the
    importer decodes them (CMU artefact) so the daemon sees the real, external address."""
    m = _IMCEA.match(address.strip())
    if not m:
        return None
    inner = re.sub(r"\+([0-9a-fA-F]{2})", lambda h: chr(int(h.group(1), 16)), m.group(1))
    angled = re.search(r"<([^<>@\s]+@[^<>@\s]+)>", inner)
    candidate = angled.group(1) if angled else re.sub(r"@[A-Za-z][A-Za-z0-9 _-]*$", "", inner.strip().strip('"'))
    return _valid(candidate) if "@" in candidate else None


def _addresses(header: str | None) -> list[str]:
    out = []
    for _, raw in getaddresses([header or ""]):
        a = raw.strip().strip("'\"").lower()
        if a.startswith("imcea"):
            a = _decode_imcea(a) or a
        if (v := _valid(a)) is not None:
            out.append(v)
    return out


def _sender(from_: str | None, x_from: str | None) -> str | None:
    found = _addresses(from_)
    header = found[0] if found else None
    # CMU replaced an IMCEA-encapsulated sender by a bogus address of the Enron host ('40enron@enron.com')
    # and kept the original in X-From: the importer recovers it, and so does this.
    m = _IMCEA_IN.search(x_from or "")
    if m:
        inner = _decode_imcea(m.group(1))
        if inner and inner != header and (header is None or header.endswith("@" + m.group(2).lower())):
            return inner
    return header


def _date(value: str | None) -> datetime | None:
    try:
        d = parsedate_to_datetime(value or "")
    except (TypeError, ValueError, IndexError):
        return None
    return None if d is None else (d.replace(tzinfo=UTC) if d.tzinfo is None else d.astimezone(UTC))


def read_mailboxes(archive: Path, mailboxes: Collection[str]) -> dict[bytes, RawEmail]:
    """Distinct emails with at least one synced copy in `mailboxes`, keyed by (From, Date, Subject, body).

    The Enron corpus gives every file its own Message-ID, even copies of one email (README), so the
    identity kpis.md dedups by is the one the importer gives each distinct email: the same key as here.
    """
    out: dict[bytes, RawEmail] = {}
    with tarfile.open(archive, "r|*") as tar:
        for member in tar:
            parts = member.name.split("/")
            if not member.isfile() or len(parts) < 3 or parts[1] not in mailboxes:
                continue
            folder = re.sub(r"[^a-z0-9]", "", parts[2].lower()) if len(parts) > 3 else ""
            if folder in _UNSYNCED:
                continue
            f = tar.extractfile(member)
            assert f is not None
            email = _read(f.read())
            if email is not None:
                out.setdefault(*email)
    return out


def _read(data: bytes) -> tuple[bytes, RawEmail] | None:
    head, _, body = data.partition(b"\n\n")
    msg = _PARSER.parsebytes(head + b"\n\n")
    key = hashlib.sha256()
    for name in ("From", "Date", "Subject"):
        key.update(" ".join(str(msg.get(name, "")).split()).encode("utf-8", "surrogateescape") + b"\0")
    key.update(body)
    sent = _date(msg.get("Date"))
    sender = _sender(msg.get("From"), msg.get("X-From"))
    if sent is None or sender is None:  # not mail the importer can file (it names such files)
        return None
    rcpts = tuple(dict.fromkeys(_addresses(msg.get("To")) + _addresses(msg.get("Cc"))))
    return key.digest(), RawEmail(sent, sender, rcpts)


def _internal(address: str) -> bool:
    domain = address.rsplit("@", 1)[1]
    return domain == INTERNAL_DOMAIN or domain.endswith("." + INTERNAL_DOMAIN)


def _ignored(address: str) -> bool:
    local = address.split("@", 1)[0]
    return local in DEFAULT_IGNORED_LOCALPARTS or local.partition("+")[0] in DEFAULT_IGNORED_LOCALPARTS


def emails_per_external(emails: Iterable[RawEmail], as_of: datetime, lookback_days: int) -> dict[str, Counter[str]]:
    """External address -> Counter(sent=..., received=...) over the emails in [T - lookback, T]."""
    start = as_of - timedelta(days=lookback_days)
    out: dict[str, Counter[str]] = {}
    for e in emails:
        if not (start <= e.sent <= as_of) or _ignored(e.sender):
            continue
        people = [a for a in e.recipients if not _ignored(a) and a != e.sender]
        if _internal(e.sender) and any(not _internal(a) for a in people):
            direction = "sent"
        elif not _internal(e.sender) and any(_internal(a) for a in people):
            direction = "received"
        else:
            continue
        for a in {e.sender, *people}:
            if not _internal(a):
                out.setdefault(a, Counter())[direction] += 1
    return out
