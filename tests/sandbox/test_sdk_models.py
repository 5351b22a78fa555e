"""Every kind of Graph response the sandbox produces parses with msgraph-sdk's own models, and no field is
unknown to them (additional_data holds only OData annotations such as @odata.etag or @removed).

Known exception, kept on purpose: the 429 throttling body copies Microsoft's documented one
(graph-throttling-1.json), whose innerError has code/message/status, which msgraph-sdk's InnerError
model does not declare (test_shapes.py checks that body).
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import timedelta
from typing import Any

from kiota_serialization_json.json_parse_node import JsonParseNode
from msgraph.generated.models.directory_object import DirectoryObject
from msgraph.generated.models.domain import Domain
from msgraph.generated.models.event import Event
from msgraph.generated.models.group import Group
from msgraph.generated.models.mail_folder import MailFolder
from msgraph.generated.models.message import Message
from msgraph.generated.models.o_data_errors.o_data_error import ODataError
from msgraph.generated.models.organization import Organization
from msgraph.generated.models.user import User

from relinsights.sandbox import SandboxServer
from relinsights.sandbox.representations import USER_PROPERTIES

from .conftest import graph_client, pages


def unknown_fields(obj: Any, path: str = "$") -> list[str]:
    out: list[str] = []
    extra = getattr(obj, "additional_data", None) or {}
    out += [f"{path}.{k}" for k in extra if not k.startswith("@")]
    if dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            v = getattr(obj, f.name)
            if isinstance(v, list):
                for i, x in enumerate(v):
                    out += unknown_fields(x, f"{path}.{f.name}[{i}]")
            elif dataclasses.is_dataclass(v) and not isinstance(v, enum.Enum):
                out += unknown_fields(v, f"{path}.{f.name}")
    return out


def parse(model: type, item: dict[str, Any]) -> Any:
    obj = JsonParseNode(item).get_object_value(model)
    problems = unknown_fields(obj)
    assert not problems, f"{model.__name__}: fields msgraph-sdk does not know: {problems}"
    return obj


def test_every_response_kind_parses_with_msgraph_models(sandbox: SandboxServer) -> None:
    sb, org = sandbox, sandbox.org
    u = org.generator.managers[0]
    base = f"{sb.graph_url}/users/{u.id}"
    sb.app_registration.granted |= {"Organization.Read.All", "Mail.Read"}
    seen: dict[str, int] = {}

    def check(model: type, items: list[dict[str, Any]], label: str) -> None:
        for it in items:
            parse(model, it)
        seen[label] = seen.get(label, 0) + len(items)

    with graph_client(sb, Prefer='IdType="ImmutableId", odata.maxpagesize=50') as c:
        users = c.get(
            f"{sb.graph_url}/users",
            params={"$select": ",".join(sorted(USER_PROPERTIES))},  # every property the sandbox serves
        ).json()["value"]
        check(User, users, "users")
        check(User, [c.get(f"{sb.graph_url}/users/{u.user_principal_name}").json()], "user")
        g = org.generator.sales_group.id
        check(DirectoryObject, c.get(f"{sb.graph_url}/groups/{g}/transitiveMembers").json()["value"], "members")
        check(
            User, c.get(f"{sb.graph_url}/groups/{g}/transitiveMembers/microsoft.graph.user").json()["value"], "members"
        )
        check(
            Group, c.get(f"{sb.graph_url}/groups/{g}/transitiveMembers/microsoft.graph.group").json()["value"], "groups"
        )
        check(Group, [c.get(f"{sb.graph_url}/groups/{g}").json()], "groups")
        check(Domain, c.get(f"{sb.graph_url}/domains").json()["value"], "domains")
        check(Organization, c.get(f"{sb.graph_url}/organization").json()["value"], "organization")
        check(MailFolder, [c.get(f"{base}/mailFolders/inbox").json()], "folder")
        top, flink = pages(c, f"{base}/mailFolders/delta")
        check(MailFolder, top, "folders")
        check(MailFolder, pages(c, f"{base}/mailFolders/syncissues/childFolders/delta")[0], "folders")
        # messages: every property (Mail.Read default set), then partial updates and removals
        inbox, mlink = pages(c, f"{base}/mailFolders/inbox/messages/delta")
        check(Message, inbox, "messages")
        sent, _ = pages(
            c,
            f"{base}/mailFolders/sentitems/messages/delta",
            {"$select": "bccRecipients,internetMessageHeaders,uniqueBody,body,flag,replyTo,webLink"},
        )
        check(Message, sent, "messages")
        msgs = org.messages_in(u.id, "inbox")
        org.mark_read(u.id, next(m for m in msgs if not m.is_read).id) if any(not m.is_read for m in msgs) else None
        org.mark_read(u.id, msgs[0].id, not msgs[0].is_read)
        org.delete_message(u.id, msgs[1].id)
        fid = org.create_folder(u.id, "inbox", "Partners")
        org.delete_folder(u.id, fid)
        delta, _ = pages(c, mlink)
        assert any("@removed" in m for m in delta) and any(
            set(m) == {"@odata.type", "@odata.etag", "id", "isRead"} for m in delta
        )
        check(Message, delta, "message changes")
        check(MailFolder, pages(c, flink)[0], "folder changes")
        # events: occurrences, exceptions, all-day, cancelled, removed
        now = org.now()
        params = {
            "startDateTime": (now - timedelta(days=100)).isoformat(),
            "endDateTime": (now + timedelta(days=60)).isoformat(),
        }
        events, elink = pages(c, f"{base}/calendarView/delta", params, {"Prefer": 'outlook.timezone="UTC"'})
        assert {"occurrence", "exception", "singleInstance"} <= {e["type"] for e in events}
        check(Event, events, "events")
        seller = org.generator.sellers[0]
        check(Event, pages(c, f"{sb.graph_url}/users/{seller.id}/calendarView/delta", params)[0], "events")
        occ = next(e for e in events if e["type"] == "occurrence" and e["start"]["dateTime"] > now.isoformat()[:19])
        org.cancel_event(
            org.mailboxes[u.id].events[occ["id"]].meeting.uid, org.mailboxes[u.id].events[occ["id"]].original_start
        )
        changes, _ = pages(c, elink)
        assert changes and all("@removed" in e for e in changes)
        check(Event, changes, "event changes")
        # errors parse as ODataError with code and message
        for url in (f"{base}/mailFolders/nope", f"{sb.graph_url}/groups/x/transitiveMembers", f"{sb.graph_url}/me"):
            r = c.get(url)
            assert r.status_code >= 400
            err = parse(ODataError, r.json())
            assert err.error.code and err.error.message and err.error.inner_error.request_id
    assert len(seen) >= 13, seen
