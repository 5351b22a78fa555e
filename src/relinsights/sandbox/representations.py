"""How Graph renders each sandbox entity as JSON (property names, nesting and value types of v1.0)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from . import ids
from .model import Attendee, Domain, Event, Folder, Group, Mailbox, Message, Org, User, rest_message_id
from .odata import graph_datetime

# ---------------------------------------------------------------- directory

USER_PROPERTIES = {
    "id",
    "accountEnabled",
    "businessPhones",
    "createdDateTime",
    "department",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mailNickname",
    "mobilePhone",
    "officeLocation",
    "otherMails",
    "preferredLanguage",
    "proxyAddresses",
    "surname",
    "usageLocation",
    "userPrincipalName",
    "userType",
}
# What GET /users returns without $select (v1.0 default property set).
USER_DEFAULT = [
    "businessPhones",
    "displayName",
    "givenName",
    "jobTitle",
    "mail",
    "mobilePhone",
    "officeLocation",
    "preferredLanguage",
    "surname",
    "userPrincipalName",
    "id",
]


def user_json(u: User, select: list[str] | None) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": u.id,
        "accountEnabled": u.account_enabled,
        "businessPhones": list(u.business_phones),
        "createdDateTime": graph_datetime(u.created),
        "department": u.department,
        "displayName": u.display_name,
        "givenName": u.given_name,
        "jobTitle": u.job_title,
        "mail": u.mail,
        "mailNickname": u.mail_nickname,
        "mobilePhone": u.mobile_phone,
        "officeLocation": u.office_location,
        "otherMails": [],
        "preferredLanguage": u.preferred_language,
        "proxyAddresses": list(u.proxy_addresses),
        "surname": u.surname,
        "usageLocation": u.usage_location,
        "userPrincipalName": u.user_principal_name,
        "userType": "Member",
    }
    fields = select or USER_DEFAULT
    out = {f: values[f] for f in fields}
    out.setdefault("id", u.id)  # directory objects always carry their id
    return out


GROUP_PROPERTIES = {
    "id",
    "displayName",
    "description",
    "mail",
    "mailEnabled",
    "mailNickname",
    "securityEnabled",
    "groupTypes",
    "createdDateTime",
}


def group_json(g: Group, select: list[str] | None) -> dict[str, Any]:
    values: dict[str, Any] = {
        "id": g.id,
        "createdDateTime": graph_datetime(g.created),
        "description": g.description,
        "displayName": g.display_name,
        "groupTypes": [],
        "mail": g.mail,
        "mailEnabled": g.mail_enabled,
        "mailNickname": g.mail_nickname,
        "securityEnabled": g.security_enabled,
    }
    fields = select or list(values)
    out = {f: values[f] for f in fields if f in values}
    out.setdefault("id", g.id)
    return out


def domain_json(d: Domain) -> dict[str, Any]:
    return {
        "authenticationType": "Managed",
        "availabilityStatus": None,
        "id": d.name,
        "isAdminManaged": True,
        "isDefault": d.is_default,
        "isInitial": d.is_initial,
        "isRoot": True,
        "isVerified": d.is_verified,
        "manufacturer": None,
        "model": None,
        "passwordNotificationWindowInDays": 14,
        "passwordValidityPeriodInDays": 2147483647,
        "supportedServices": list(d.supported_services) if d.is_verified else [],
        "state": None,
    }


def organization_json(org: Org) -> dict[str, Any]:
    # The doc example also has isMultipleDataLocationsForServicesEnabled and directorySizeQuota, which
    # msgraph-sdk's v1.0 models do not know (beta properties): left out.
    return {
        "id": org.tenant_id,
        "deletedDateTime": None,
        "businessPhones": ["425-555-0100"],
        "city": "Redmond",
        "country": None,
        "countryLetterCode": "US",
        "createdDateTime": graph_datetime(org.created),
        "defaultUsageLocation": None,
        "displayName": org.name,
        "marketingNotificationEmails": [],
        "onPremisesLastSyncDateTime": None,
        "onPremisesSyncEnabled": None,
        "partnerTenantType": None,
        "postalCode": "98052",
        "preferredLanguage": "en",
        "securityComplianceNotificationMails": [],
        "securityComplianceNotificationPhones": [],
        "state": "WA",
        "street": "1 Microsoft Way",
        "technicalNotificationMails": [f"admin@{org.default_domain}"],
        "tenantType": "AAD",
        "assignedPlans": [
            {
                "assignedDateTime": graph_datetime(org.created),
                "capabilityStatus": "Enabled",
                "service": "exchange",
                "servicePlanId": "113feb6c-3fe4-4440-bddc-54d774bf0318",
            }
        ],
        "privacyProfile": {"contactEmail": "", "statementUrl": ""},
        "provisionedPlans": [{"capabilityStatus": "Enabled", "provisioningStatus": "Success", "service": "exchange"}],
        "verifiedDomains": [
            {
                "capabilities": "Email, OfficeCommunicationsOnline",
                "isDefault": d.is_default,
                "isInitial": d.is_initial,
                "name": d.name,
                "type": "Managed",
            }
            for d in org.domains
            if d.is_verified
        ],
    }


# ---------------------------------------------------------------- mail

FOLDER_PROPERTIES = {
    "id",
    "displayName",
    "parentFolderId",
    "childFolderCount",
    "unreadItemCount",
    "totalItemCount",
    "isHidden",
}


def folder_json(org: Org, mb: Mailbox, f: Folder, select: list[str] | None) -> dict[str, Any]:
    total, unread = org.folder_counts(mb, f.id)
    values: dict[str, Any] = {
        "id": f.id,
        "displayName": f.display_name,
        "parentFolderId": f.container,
        "childFolderCount": len(org.child_folders(mb, f.id)),
        "unreadItemCount": unread,
        "totalItemCount": total,
        "isHidden": f.is_hidden,
    }
    fields = select or list(values)
    out = {f: values[f] for f in fields}
    out["id"] = f.id
    return out


MESSAGE_PROPERTIES = {
    "id",
    "createdDateTime",
    "lastModifiedDateTime",
    "changeKey",
    "categories",
    "receivedDateTime",
    "sentDateTime",
    "hasAttachments",
    "internetMessageId",
    "subject",
    "bodyPreview",
    "importance",
    "parentFolderId",
    "conversationId",
    "conversationIndex",
    "isDeliveryReceiptRequested",
    "isReadReceiptRequested",
    "isRead",
    "isDraft",
    "webLink",
    "inferenceClassification",
    "body",
    "uniqueBody",
    "sender",
    "from",
    "toRecipients",
    "ccRecipients",
    "bccRecipients",
    "replyTo",
    "flag",
    "internetMessageHeaders",
}
# Needs Mail.Read (Mail.ReadBasic.All leaves bodies and headers out).
MESSAGE_RESTRICTED = {"body", "bodyPreview", "uniqueBody", "internetMessageHeaders"}
MESSAGE_DEFAULT = sorted(MESSAGE_PROPERTIES - MESSAGE_RESTRICTED)


def _recipient(p: tuple[str, str]) -> dict[str, Any]:
    return {"emailAddress": {"name": p[0], "address": p[1]}}


def message_id(m: Message, immutable: bool) -> str:
    return m.id if immutable else rest_message_id(m)


def message_json(
    m: Message, select: list[str] | None, *, immutable: bool, full_headers: bool = False
) -> dict[str, Any]:
    c = m.content
    assert c is not None
    fields = select or MESSAGE_DEFAULT
    v: dict[str, Any] = {"@odata.type": "#microsoft.graph.message", "@odata.etag": ids.etag(m.seq)}
    bcc = c.bcc if m.is_sender_copy else []  # Bcc is only visible on the sender's copy
    for f in fields:
        if f == "id":
            continue
        match f:
            case "createdDateTime":
                v[f] = graph_datetime(m.created)
            case "lastModifiedDateTime":
                v[f] = graph_datetime(m.modified)
            case "changeKey":
                v[f] = ids.change_key(m.seq)
            case "categories":
                v[f] = list(c.categories)
            case "receivedDateTime":
                v[f] = graph_datetime(m.received)
            case "sentDateTime":
                v[f] = graph_datetime(c.sent)
            case "hasAttachments":
                v[f] = c.has_attachments
            case "internetMessageId":
                v[f] = c.internet_message_id
            case "subject":
                v[f] = c.subject
            case "bodyPreview":
                v[f] = ""
            case "importance":
                v[f] = c.importance
            case "parentFolderId":
                v[f] = m.container
            case "conversationId":
                v[f] = c.conversation_id
            case "conversationIndex":
                v[f] = c.conversation_index
            case "isDeliveryReceiptRequested" | "isReadReceiptRequested":
                v[f] = False
            case "isRead":
                v[f] = m.is_read
            case "isDraft":
                v[f] = m.is_draft
            case "webLink":
                v[f] = (
                    "https://outlook.office365.com/owa/?ItemID="
                    + m.id.replace("-", "%2F")
                    + "&exvsurl=1&viewmodel=ReadMessageItem"
                )
            case "inferenceClassification":
                v[f] = m.inference
            case "body" | "uniqueBody":
                v[f] = {"contentType": "text", "content": ""}  # the sandbox keeps metadata only
            case "sender":
                v[f] = _recipient(c.sender)
            case "from":
                v[f] = _recipient(c.from_)
            case "toRecipients":
                v[f] = [_recipient(p) for p in c.to]
            case "ccRecipients":
                v[f] = [_recipient(p) for p in c.cc]
            case "bccRecipients":
                v[f] = [_recipient(p) for p in bcc]
            case "replyTo":
                v[f] = []
            case "flag":
                v[f] = {"flagStatus": "notFlagged"}
            case "internetMessageHeaders":
                v[f] = _headers(m, full_headers)
    v["id"] = message_id(m, immutable)
    return v


def _headers(m: Message, full: bool) -> list[dict[str, str]]:
    c = m.content
    assert c is not None
    if m.is_sender_copy and not full:
        return []  # Sent Items copies carry no transport headers (what makes them unreliable there)
    h = [{"name": "Message-ID", "value": c.internet_message_id}, {"name": "Subject", "value": c.subject}]
    if c.in_reply_to:
        h.append({"name": "In-Reply-To", "value": c.in_reply_to})
    if c.references:
        h.append({"name": "References", "value": " ".join(c.references)})
    return h


def message_partial_json(m: Message, fields: set[str], select: list[str] | None, *, immutable: bool) -> dict[str, Any]:
    """A partial update: id plus the changed fields (those selected), as Graph may send for flag changes."""
    wanted = [f for f in sorted(fields) if select is None or f in select]
    full = message_json(m, wanted or ["id"], immutable=immutable)
    return {k: full[k] for k in ("@odata.type", "@odata.etag", *wanted, "id")}


def removed_json(odata_type: str, item_id: str, reason: str = "deleted") -> dict[str, Any]:
    return {"@odata.type": f"#microsoft.graph.{odata_type}", "id": item_id, "@removed": {"reason": reason}}


# ---------------------------------------------------------------- calendar

_WINDOWS_ZONES = {
    "utc": "UTC",
    "pacific standard time": "America/Los_Angeles",
    "eastern standard time": "America/New_York",
    "central standard time": "America/Chicago",
    "gmt standard time": "Europe/London",
    "w. europe standard time": "Europe/Berlin",
    "romance standard time": "Europe/Paris",
}


def resolve_zone(name: str | None) -> tuple[str, ZoneInfo]:
    """Prefer: outlook.timezone value -> (name echoed in the payload, zone). Unknown names fall back to UTC."""
    if not name:
        return "UTC", ZoneInfo("UTC")
    iana = _WINDOWS_ZONES.get(name.lower(), name)
    try:
        return name, ZoneInfo(iana)
    except (ZoneInfoNotFoundError, ValueError):
        return "UTC", ZoneInfo("UTC")


def _dt_tz(dt: datetime, zone_name: str, zone: ZoneInfo) -> dict[str, str]:
    local = dt.astimezone(zone).replace(tzinfo=None)
    return {"dateTime": local.strftime("%Y-%m-%dT%H:%M:%S.0000000"), "timeZone": zone_name}


def _attendee_json(a: Attendee) -> dict[str, Any]:
    return {
        "type": a.type,
        "status": {
            "response": a.response,
            "time": graph_datetime(a.response_time) if a.response_time else "0001-01-01T00:00:00Z",
        },
        "emailAddress": {"name": a.name, "address": a.address},
    }


def event_json(e: Event, zone_name: str, zone: ZoneInfo, *, basic: bool = False) -> dict[str, Any]:
    """basic: Calendars.ReadBasic leaves out attendees, body and location, as Graph does."""
    m = e.meeting
    assert m is not None and e.start is not None and e.end is not None
    online_url = (
        f"https://teams.microsoft.com/l/meetup-join/{ids.short_hex(m.uid, 'teams', size=12)}" if m.is_online else None
    )
    out: dict[str, Any] = {
        "@odata.type": "#microsoft.graph.event",
        "@odata.etag": ids.etag(e.seq),
        "createdDateTime": _dt7(e.created),
        "lastModifiedDateTime": _dt7(e.modified),
        "changeKey": ids.change_key(e.seq),
        "categories": [],
        "transactionId": None,
        "originalStartTimeZone": "UTC",
        "originalEndTimeZone": "UTC",
        "iCalUId": e.ical_uid,
        "uid": e.meeting.uid if e.meeting else e.ical_uid,
        "reminderMinutesBeforeStart": 15,
        "isReminderOn": not e.is_organizer,
        "hasAttachments": False,
        "subject": e.subject,
        "bodyPreview": "",
        "importance": "normal",
        "sensitivity": "normal",
        "isAllDay": m.is_all_day,
        "isCancelled": e.is_cancelled,
        "isOrganizer": e.is_organizer,
        "responseRequested": True,
        "seriesMasterId": e.series_master_id,
        "showAs": "free"
        if e.is_cancelled or e.response == "declined"
        else ("tentative" if e.response == "tentativelyAccepted" else "busy"),
        "type": e.type,
        "webLink": "https://outlook.office365.com/owa/?itemid=" + e.id + "&exvsurl=1&path=/calendar/item",
        "onlineMeetingUrl": None,
        "isOnlineMeeting": m.is_online,
        "onlineMeetingProvider": "teamsForBusiness" if m.is_online else "unknown",
        "allowNewTimeProposals": True,
        "isDraft": False,
        "hideAttendees": False,
        "recurrence": None,
        "onlineMeeting": {"joinUrl": online_url} if online_url else None,
        "responseStatus": {
            "response": e.response,
            "time": graph_datetime(e.response_time) if e.response_time else "0001-01-01T00:00:00Z",
        },
        "body": {"contentType": "html", "content": ""},
        "start": _dt_tz(e.start, zone_name, zone),
        "end": _dt_tz(e.end, zone_name, zone),
        "location": _location(m.location),
        "locations": [_location(m.location)] if m.location else [],
        "attendees": [_attendee_json(a) for a in e.attendees],
        "organizer": {"emailAddress": {"name": m.organizer[0], "address": m.organizer[1]}},
        "id": e.id,
    }
    del out["uid"]  # not a v1.0 property; kept out of the payload
    if e.original_start is not None:
        out["originalStart"] = graph_datetime(e.original_start)
    if basic:
        for k in ("attendees", "body", "bodyPreview", "location", "locations", "onlineMeeting"):
            out.pop(k, None)
    return out


def _location(name: str | None) -> dict[str, Any]:
    if not name:
        return {
            "displayName": "",
            "locationType": "default",
            "uniqueIdType": "unknown",
            "address": {},
            "coordinates": {},
        }
    return {
        "displayName": name,
        "locationType": "default",
        "uniqueId": name,
        "uniqueIdType": "private",
        "address": {},
        "coordinates": {},
    }


def _dt7(dt: datetime | None) -> str | None:
    if dt is None:
        return None
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
