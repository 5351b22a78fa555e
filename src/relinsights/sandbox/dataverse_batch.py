"""`POST $batch`: multipart/mixed requests with change sets, answered in the documented multipart shape.

- Parts are `application/http` requests (request line with an absolute-path, absolute or relative URL, or a
  `$n` Content-ID reference), or a nested `multipart/mixed` change set of non-GET requests.
- A change set is all or nothing: when one of its requests fails, everything it did is undone and its
  answer is that request's error alone (no nested multipart).
- Without `Prefer: odata.continue-on-error` the batch stops at the first failure and the outer status is
  400, as in the documented example; with it, every request runs and the outer status is 200.
- A Content-ID referenced before it is declared fails with "Content-ID Reference: '$1' does not exist in
  the batch context."; more than 1000 requests (change-set members included) fail the whole batch.
- Responses use CRLF line endings and boundaries `batchresponse_<uuid>` / `changesetresponse_<uuid>`.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote

from .dataverse_http import DataverseError, DvRequest, DvResponse, bad_request, error_response

if TYPE_CHECKING:
    from .dataverse_api import DataverseApi


@dataclass
class Part:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    content_id: str | None = None


@dataclass
class ChangeSet:
    parts: list[Part] = field(default_factory=list)


def _boundary(content_type: str) -> str | None:
    m = re.search(r'boundary\s*=\s*("([^"]+)"|[^;\s]+)', content_type, re.I)
    if m is None:
        return None
    return m.group(2) or m.group(1)


def _split(body: bytes, boundary: str) -> list[bytes]:
    """The parts between `--boundary` delimiters (the line break before a delimiter belongs to it)."""
    delim = re.escape(b"--" + boundary.encode())
    pieces = re.split(rb"(?:\r?\n)?" + delim, body)
    out = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        out.append(re.sub(rb"^[ \t]*\r?\n", b"", piece, count=1))
    return out


def _headers_and_body(raw: bytes) -> tuple[dict[str, str], bytes]:
    m = re.search(rb"\r?\n\r?\n", raw)
    head, body = (raw[: m.start()], raw[m.end() :]) if m else (raw, b"")
    headers: dict[str, str] = {}
    for line in re.split(rb"\r?\n", head):
        if b":" in line:
            k, _, v = line.decode("utf-8", "replace").partition(":")
            headers[k.strip().lower()] = v.strip()
    return headers, body


def _http_part(raw: bytes, content_id: str | None) -> Part:
    text_end = re.search(rb"\r?\n", raw)
    if text_end is None:
        raise bad_request("A $batch part has no request line.")
    line = raw[: text_end.start()].decode("utf-8", "replace").strip()
    m = re.fullmatch(r"(GET|POST|PATCH|PUT|DELETE)\s+(\S+)(?:\s+HTTP/1\.[01])?", line)
    if m is None:
        raise bad_request(f"A $batch part has an invalid request line: '{line}'.")
    headers, body = _headers_and_body(raw[text_end.end() :])
    return Part(m.group(1), m.group(2), headers, body.rstrip(b"\r\n"), content_id)


def parse_batch(req: DvRequest) -> list[Part | ChangeSet]:
    boundary = _boundary(req.headers.get("content-type", ""))
    if boundary is None:
        raise bad_request("A $batch request needs Content-Type: multipart/mixed with a boundary.")
    items: list[Part | ChangeSet] = []
    for raw in _split(req.body, boundary):
        headers, content = _headers_and_body(raw)
        ctype = headers.get("content-type", "")
        if ctype.lower().startswith("multipart/mixed"):
            inner = _boundary(ctype)
            if inner is None:
                raise bad_request("A change set needs a boundary.")
            cs = ChangeSet()
            for sub in _split(content, inner):
                sub_headers, sub_content = _headers_and_body(sub)
                part = _http_part(sub_content, sub_headers.get("content-id"))
                if part.method == "GET":
                    raise bad_request("A change set cannot contain GET requests.")
                cs.parts.append(part)
            items.append(cs)
        elif ctype.lower().startswith("application/http"):
            items.append(_http_part(content, headers.get("content-id")))
        else:
            raise bad_request(f"Unsupported $batch part Content-Type '{ctype}'.")
    return items


def _part_bytes(resp: DvResponse, content_id: str | None) -> bytes:
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"HTTP/1.1 {resp.status} {resp.reason}"]
    lines += [f"{k}: {v}" for k, v in resp.headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + resp.body + b"\r\n"


class BatchRunner:
    def __init__(self, api: DataverseApi, req: DvRequest) -> None:
        self.api, self.req = api, req
        self.content_ids: dict[str, str] = {}

    def count(self, items: list[Part | ChangeSet]) -> int:
        return sum(len(i.parts) if isinstance(i, ChangeSet) else 1 for i in items)

    def _subrequest(self, part: Part) -> DvRequest:
        url = part.url
        if url.startswith("$"):
            ref, sep, rest = url[1:].partition("/")
            if ref not in self.content_ids:
                raise bad_request(f"Content-ID Reference: '${ref}' does not exist in the batch context.")
            url = self.content_ids[ref] + (sep + rest if sep else "")
        m = re.search(r"/api/data/v9\.\d/", url)
        path_q = url[m.end() :] if m else url.lstrip("/")
        path, _, query = path_q.partition("?")
        return DvRequest(
            method=part.method,
            path=unquote(path),
            query=parse_qsl(query, keep_blank_values=True),
            headers=part.headers,
            body=part.body,
            api_base=self.req.api_base,
            principal=self.req.principal,
            content_ids=self.content_ids,
        )

    def _run(self, part: Part) -> DvResponse:
        try:
            sub = self._subrequest(part)
        except DataverseError as err:
            return error_response(err)
        resp = self.api.execute(sub)
        if resp.status < 400 and part.content_id and "OData-EntityId" in resp.headers:
            m = re.search(r"/api/data/v9\.\d/(.*)$", resp.headers["OData-EntityId"])
            if m is not None:
                self.content_ids[part.content_id] = m.group(1)
        if resp.status >= 400:
            resp.headers = {"REQ_ID": str(uuid.uuid4()), **resp.headers}
        return resp

    def run(self, items: list[Part | ChangeSet]) -> DvResponse:
        store = self.api.store
        carry_on = "odata.continue-on-error" in self.req.prefer
        boundary = f"batchresponse_{uuid.uuid4()}"
        chunks: list[bytes] = []
        failed = False
        for item in items:
            if isinstance(item, Part):
                resp = self._run(item)
                chunks.append(_part_bytes(resp, item.content_id))
                failed = failed or resp.status >= 400
            else:
                tx = store.begin()
                done: list[tuple[Part, DvResponse]] = []
                bad: tuple[Part, DvResponse] | None = None
                declared = dict(self.content_ids)
                for part in item.parts:
                    resp = self._run(part)
                    if resp.status >= 400:
                        bad = (part, resp)
                        break
                    done.append((part, resp))
                if bad is not None:
                    store.rollback(tx)
                    self.content_ids.clear()
                    self.content_ids.update(declared)  # ids of rolled-back records are gone
                    chunks.append(_part_bytes(bad[1], bad[0].content_id))
                    failed = True
                else:
                    store.commit(tx)
                    cs = f"changesetresponse_{uuid.uuid4()}"
                    inner = b"".join(f"--{cs}\r\n".encode() + _part_bytes(r, p.content_id) for p, r in done)
                    head = f"Content-Type: multipart/mixed; boundary={cs}\r\n\r\n".encode()
                    chunks.append(head + inner + f"--{cs}--\r\n".encode())
            if failed and not carry_on:
                break
        body = b"".join(f"--{boundary}\r\n".encode() + c for c in chunks) + f"--{boundary}--\r\n".encode()
        headers = {"Content-Type": f"multipart/mixed; boundary={boundary}", "OData-Version": "4.0"}
        if carry_on:
            headers["Preference-Applied"] = "odata.continue-on-error"
        return DvResponse(400 if failed and not carry_on else 200, body, headers)
