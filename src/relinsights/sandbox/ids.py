"""Deterministic identifiers shaped like the ones Entra and Exchange hand out.

Everything is derived from a seed and a name (hash-based), so the same org generated twice has the
same ids, whatever order its parts are created in.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import uuid
from datetime import datetime


def _digest(seed: int | str, *parts: object, size: int = 32) -> bytes:
    h = hashlib.blake2b(digest_size=size)
    h.update(str(seed).encode())
    for p in parts:
        h.update(b"\x1f")
        h.update(str(p).encode())
    return h.digest()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii")


def guid(seed: int | str, *parts: object) -> str:
    """A version-4-looking GUID, as Entra uses for object ids."""
    return str(uuid.UUID(bytes=_digest(seed, *parts, size=16), version=4))


def exchange_id(mailbox_guid: str, kind: str, *parts: object) -> str:
    """A REST item id ('AAMkAD...'): mailbox GUID then an entry id, URL-safe base64 as Graph returns."""
    raw = b"\x00\x00\x00" + uuid.UUID(mailbox_guid).bytes + b"\x00F\x00\x00\x00\x00" + _digest(kind, *parts, size=38)
    return "AAMkA" + _b64(raw)[5:]


def immutable_id(mailbox_guid: str, kind: str, *parts: object) -> str:
    """An immutable id ('AAkALg...'): what Graph returns with Prefer: IdType="ImmutableId"."""
    raw = b"\x00\x09\x00\x2e" + uuid.UUID(mailbox_guid).bytes + b"\x00" + _digest(kind, *parts, size=28)
    return "AAkALg" + _b64(raw)[6:]


def conversation_id(seed: int | str, *parts: object) -> str:
    return "AAQkA" + _b64(b"\x00" + _digest(seed, "conv", *parts, size=47))[5:]


def change_key(seq: int) -> str:
    return "CQAAABYAAAA" + _b64(struct.pack(">Q", seq) + b"\x00\x00\x00\x00").rstrip("=")


def etag(seq: int) -> str:
    return f'W/"{change_key(seq)}"'


def conversation_index(first: bytes, replies: int, sent: datetime) -> str:
    """RFC-less but real Exchange format: 22-byte header, then 5 bytes per reply."""
    raw = first + b"".join(struct.pack(">IB", (int(sent.timestamp()) + i) & 0xFFFFFFFF, i) for i in range(replies))
    return base64.b64encode(raw).decode("ascii")


def conversation_header(seed: int | str, sent: datetime, *parts: object) -> bytes:
    # FILETIME ticks (100 ns since 1601), top 5 bytes as Exchange does, then a 16-byte GUID.
    ticks = int((sent.timestamp() + 11644473600) * 10_000_000)
    return b"\x01" + ticks.to_bytes(8, "big")[:5] + _digest(seed, "convidx", *parts, size=16)


def internet_message_id(seed: int | str, domain: str, *parts: object) -> str:
    d = _digest(seed, "imid", *parts, size=16).hex().upper()
    if domain in {"gmail.com", "googlemail.com"}:
        return f"<CA{_b64(bytes.fromhex(d))[:40]}@mail.gmail.com>"
    host = f"{d[:4]}PR{d[4:6]}MB{d[6:10]}"
    return f"<{host}{d[10:30]}@{host}.eurprd0{int(d[30], 16) % 9 + 1}.prod.outlook.com>"


def opaque_token(seed: int | str, *parts: object) -> str:
    return _b64(_digest(seed, "tok", *parts, size=24)).rstrip("=")


def short_hex(seed: int | str, *parts: object, size: int = 8) -> str:
    return _digest(seed, *parts, size=size).hex()
