"""Every source of one run -> its activities as frames (frames.py): Graph mail and meetings by columns, the
rest by objects.

Graph mail and calendar copies are nearly all of a tenant's activities and go through the column builders
(mail_frames.py, meeting_frames.py). Calls, the CRM's own emails and appointments, and the Graph copies of
emails and meetings the CRM tracked too (which merge with the CRM copy) go through the object builder
(activities.py), whose rules are the reference; both results are then one set of frames, sorted by
(time, key).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from relinsights.analytics.activities import Tier, build_activities, crm_email_key, crm_meeting_key
from relinsights.analytics.activity_table import settled_acts
from relinsights.analytics.frames import ActivityFrames, frames_of
from relinsights.analytics.mail_frames import GraphIds, MailRows, build_mail_frames
from relinsights.analytics.meeting_frames import EventRows, build_meeting_frames
from relinsights.analytics.parties import PartyRules
from relinsights.analytics.sources import CalendarEvent, CrmAppointment, CrmEmail, MailMessage, PhoneCall


def build_activity_frames(
    *,
    rules: PartyRules,
    tier: Tier = Tier.ENHANCED,
    mail: MailRows | None = None,
    meetings: EventRows | None = None,
    crm_emails: Sequence[CrmEmail] = (),
    crm_appointments: Sequence[CrmAppointment] = (),
    phone_calls: Iterable[PhoneCall] = (),
    settle: bool = False,
    spill_keys: bool = False,
    graph_ids: GraphIds | None = None,
) -> tuple[ActivityFrames, dict[str, int]]:
    """(the activities, the rows skipped by reason): what `build_activities` gives for the same rows,
    `mail` being the Graph messages and recipients as mail_frames.py reads them, `meetings` the Graph
    events and attendees as meeting_frames.py reads them; both builders take the rows out of those holders.
    `graph_ids` reads the Graph ids of mail copies read without them (mail_frames.with_sources).
    settle=True: with each email's thread ids settled (activity_table.settle_threads), before the sort;
    spill_keys=True: with the activity keys kept in a file (ActivityFrames.combine)."""
    skipped: Counter[str] = Counter()
    pieces: list[ActivityFrames] = []
    tracked: list[MailMessage] = []
    shared: list[CalendarEvent] = []
    # Calendars first: their rows go before the mail, the larger, is built (combine orders the pieces' activities).
    if tier is Tier.ENHANCED and meetings is not None:
        built, shared = build_meeting_frames(meetings, {crm_meeting_key(a) for a in crm_appointments}, rules, skipped)
        pieces.append(built)
        del built  # (only the list holds a piece: combine lets each go as soon as it can)
    if tier is Tier.ENHANCED and mail is not None:
        built, tracked = build_mail_frames(mail, {crm_email_key(e) for e in crm_emails}, rules, skipped, graph_ids)
        pieces.append(built)
        del built
    objects = build_activities(
        rules=rules,
        tier=tier,
        messages=tracked,
        events=shared,
        crm_emails=crm_emails,
        crm_appointments=crm_appointments,
        phone_calls=phone_calls,
        keep_sources=False,
    )
    skipped.update(objects.skipped)
    pieces.append(frames_of(objects.activities))
    frames = ActivityFrames.combine(pieces, settled_acts if settle else None, spill_keys=spill_keys)
    return frames, {k: n for k, n in sorted(skipped.items()) if n}
