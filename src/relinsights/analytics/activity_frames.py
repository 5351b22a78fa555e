"""Every source of one run -> its activities as frames (frames.py): Graph mail by columns, the rest by objects.

Graph mail is nearly all of a tenant's activities and goes through the column builder (mail_frames.py).
Meetings, calls, the CRM's own emails and appointments, and the Graph copies of emails the CRM tracked
too (which merge with the CRM copy) go through the object builder (activities.py), whose rules are the
reference; both results are then one set of frames, sorted by (time, key).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from relinsights.analytics.activities import Tier, build_activities, crm_email_key
from relinsights.analytics.frames import ActivityFrames, frames_of
from relinsights.analytics.mail_frames import MailRows, build_mail_frames
from relinsights.analytics.parties import PartyRules
from relinsights.analytics.sources import CalendarEvent, CrmAppointment, CrmEmail, MailMessage, PhoneCall


def build_activity_frames(
    *,
    rules: PartyRules,
    tier: Tier = Tier.ENHANCED,
    mail: MailRows | None = None,
    events: Iterable[CalendarEvent] = (),
    crm_emails: Sequence[CrmEmail] = (),
    crm_appointments: Iterable[CrmAppointment] = (),
    phone_calls: Iterable[PhoneCall] = (),
) -> tuple[ActivityFrames, dict[str, int]]:
    """(the activities, the rows skipped by reason): what `build_activities` gives for the same rows,
    `mail` being the Graph messages and recipients as mail_frames.py reads them."""
    skipped: Counter[str] = Counter()
    pieces: list[ActivityFrames] = []
    tracked: list[MailMessage] = []
    if tier is Tier.ENHANCED and mail is not None:
        built, tracked = build_mail_frames(mail, {crm_email_key(e) for e in crm_emails}, rules, skipped)
        pieces.append(built)
    objects = build_activities(
        rules=rules,
        tier=tier,
        messages=tracked,
        events=events,
        crm_emails=crm_emails,
        crm_appointments=crm_appointments,
        phone_calls=phone_calls,
        keep_sources=False,
    )
    skipped.update(objects.skipped)
    pieces.append(frames_of(objects.activities))
    return ActivityFrames.combine(pieces), {k: n for k, n in sorted(skipped.items()) if n}
