"""Helpers for the Dataverse tests: an authenticated client, paging, `$batch` bodies and multipart parsing,
the documented requests of ../shared/data/microsoft-examples, and a shape comparison for Dataverse bodies."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from relinsights.sandbox import SandboxServer
from relinsights.sandbox.identity import DATAVERSE_AUDIENCE

from .conftest import EXAMPLES
from .shapes import shape_problems

ODATA = {"Accept": "application/json", "OData-MaxVersion": "4.0", "OData-Version": "4.0"}


def dv_client(sb: SandboxServer, **headers: str) -> httpx.Client:
    token = sb.access_token(DATAVERSE_AUDIENCE)
    return httpx.Client(
        base_url=sb.dataverse_api_url + "/",
        verify=sb.ssl_context(),
        headers={"Authorization": f"Bearer {token}", **ODATA, **headers},
        timeout=30,
    )


def read_all(
    c: httpx.Client, url: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None
) -> tuple[list[dict[str, Any]], str | None]:
    """Follow nextLinks; returns (every row, the deltaLink if the last page had one)."""
    rows: list[dict[str, Any]] = []
    r = c.get(url, params=params, headers=headers)
    while True:
        assert r.status_code == 200, r.text
        body = r.json()
        rows += body["value"]
        if "@odata.nextLink" not in body:
            return rows, body.get("@odata.deltaLink")
        r = c.get(body["@odata.nextLink"], headers=headers)


# ---------------------------------------------------------------- $batch


def http_part(method: str, url: str, body: Any = None, content_id: str | None = None, **headers: str) -> str:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"{method} {url} HTTP/1.1"]
    if body is not None:
        lines.append("Content-Type: application/json; type=entry")
    lines += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    lines.append("")
    text = "\r\n".join(lines) + "\r\n"
    if body is not None:
        text += orjson.dumps(body).decode()
    return text


def multipart(parts: list[str | list[str]]) -> tuple[str, bytes]:
    """A $batch body (CRLF): strings are requests, lists are change sets."""
    boundary = f"batch_{uuid.uuid4()}"
    out = ""
    for p in parts:
        out += f"--{boundary}\r\n"
        if isinstance(p, list):
            cs = f"changeset_{uuid.uuid4()}"
            out += f"Content-Type: multipart/mixed; boundary={cs}\r\n\r\n"
            out += "".join(f"--{cs}\r\n{x}\r\n" for x in p) + f"--{cs}--\r\n"
        else:
            out += p + "\r\n"
    out += f"--{boundary}--\r\n"
    return f'multipart/mixed; boundary="{boundary}"', out.encode()


@dataclass
class BatchPart:
    status: int
    headers: dict[str, str]  # inner HTTP headers, lower-case
    body: bytes
    part_headers: dict[str, str] = field(default_factory=dict)
    changeset: list[BatchPart] | None = None

    def json(self) -> Any:
        return orjson.loads(self.body)


def _headers(block: str) -> dict[str, str]:
    out = {}
    for line in block.splitlines():
        if ":" in line:
            k, _, v = line.partition(":")
            out[k.strip().lower()] = v.strip()
    return out


def parse_multipart(content_type: str, body: bytes) -> list[BatchPart]:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    assert m, content_type
    boundary = m.group(1)
    text = body.decode()
    pieces = re.split(r"(?:\r?\n)?--" + re.escape(boundary), text)
    out: list[BatchPart] = []
    for piece in pieces[1:]:
        if piece.startswith("--"):
            break
        piece = re.sub(r"^[ \t]*\r?\n", "", piece, count=1)
        head, _, rest = _cut(piece)
        part_headers = _headers(head)
        if part_headers.get("content-type", "").startswith("multipart/mixed"):
            inner = parse_multipart(part_headers["content-type"], rest.encode())
            out.append(BatchPart(0, {}, b"", part_headers, inner))
            continue
        status_line, _, after = rest.partition("\n")
        inner_head, _, inner_body = _cut(after)
        out.append(
            BatchPart(int(status_line.split()[1]), _headers(inner_head), inner_body.strip().encode(), part_headers)
        )
    return out


def _cut(text: str) -> tuple[str, str, str]:
    m = re.search(r"\r?\n\r?\n", text)
    if m is None:
        return text, "", ""
    return text[: m.start()], m.group(0), text[m.end() :]


def documented_request(
    name: str, sb: SandboxServer, replace: dict[str, str] | None = None
) -> tuple[dict[str, str], bytes]:
    """A documented raw request (.request.txt): its headers and its body with CRLF line endings, the
    organisation placeholder pointing at the sandbox."""
    text = (EXAMPLES / name).read_text()
    for k, v in (replace or {}).items():
        text = text.replace(k, v)
    text = text.replace("[Organization URI]", sb.dataverse_url).replace("[Organization Uri]", sb.dataverse_url)
    lines = [x for x in text.split("\n") if not x.startswith("#")]
    while lines and not lines[0].strip():
        lines.pop(0)
    if lines and lines[0].startswith("--"):  # a body fragment only (batch-9)
        return {"content-type": "multipart/mixed;boundary=batch_AAA123"}, "\r\n".join(lines).encode()
    head_end = lines.index("")
    headers = _headers("\n".join(lines[1:head_end]))
    return headers, "\r\n".join(lines[head_end + 1 :]).encode()


def documented_response(name: str) -> tuple[int, list[BatchPart]]:
    text = (EXAMPLES / name).read_text()
    status_line, _, rest = text.partition("\n")
    _, _, body = _cut(rest)
    boundary = re.search(r"^--(\S+)", body, re.M)
    assert boundary
    return int(status_line.split()[1]), parse_multipart(f"multipart/mixed; boundary={boundary.group(1)}", body.encode())


# ---------------------------------------------------------------- shapes


def dv_shape_problems(doc: Any, got: Any, path: str = "$", ignore: frozenset[str] = frozenset()) -> list[str]:
    """The Graph shape comparison with Dataverse's removal marker (`$deletedEntity` rows carry `reason`)."""
    return shape_problems(doc, got, path, ignore, marker="reason", strict_items=True)
