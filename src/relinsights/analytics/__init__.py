"""The pure analytics core: rows in, KPIs out (docs: kpis.md). No I/O, no database, deterministic.

Pipeline, one call per arrow (each module's docstring lists the decisions it takes where kpis.md is
silent):

    PartyRules (parties)              who is internal / external / ignored, registrable domains
    sources rows --build_activities--> ActivitySet (activities)      dedup, direction, drafts, Bcc...
    activities --match_activities(RecordIndex)--> MatchResult (matching)   links with reasons
    activities --assign_threads--> thread map (responses)
    links --compute_record_kpis / compute_all--> RecordKpis (kpis, health, responses)
    open + won opportunities --similar_won--> SimilarWon (similar)

That is the readable reference, one object at a time. The KPI job runs the same pipeline on columns
(polars), held equal to it in every analytics test (tests/analytics/factory.py):

    mail, calendar rows + other sources --build_activity_frames--> ActivityFrames
        (activity_frames, mail_frames, meeting_frames, frames)
    frames --match_frames(RecordIndex)--> MatchResult (match_frames)
    frames --ActivityTable--> columns, threads (activity_table) --compute_kpis--> RecordKpis (columnar)
"""

from relinsights.analytics.activities import (
    Activity,
    ActivitySet,
    Direction,
    Kind,
    Participant,
    Role,
    Tier,
    build_activities,
)
from relinsights.analytics.health import Health, HealthParts, HealthSnapshot, HealthState, Trend, compute_health
from relinsights.analytics.kpis import (
    Counts,
    DailyCounts,
    Interaction,
    RecordKpis,
    TopContact,
    compute_all,
    compute_record_kpis,
)
from relinsights.analytics.matching import AmbiguousDomain, Link, MatchResult, RecordIndex, match_activities
from relinsights.analytics.parties import InternalUser, PartyKind, PartyRules, registrable_domain
from relinsights.analytics.records import (
    Account,
    Contact,
    CrmRecords,
    Entity,
    Lead,
    Opportunity,
    OpportunityState,
    RecordRef,
)
from relinsights.analytics.responses import ResponseKpis, Side, SideResponse, Turn, assign_threads
from relinsights.analytics.settings import Settings
from relinsights.analytics.similar import OpportunityProfile, SimilarMatch, SimilarStats, SimilarWon, similar_won
from relinsights.analytics.sources import (
    Attendee,
    CalendarEvent,
    CallState,
    CrmAppointment,
    CrmEmail,
    CrmParty,
    MailMessage,
    PhoneCall,
)

__all__ = [
    "Account",
    "Activity",
    "ActivitySet",
    "AmbiguousDomain",
    "Attendee",
    "CalendarEvent",
    "CallState",
    "Contact",
    "Counts",
    "CrmAppointment",
    "CrmEmail",
    "CrmParty",
    "CrmRecords",
    "DailyCounts",
    "Direction",
    "Entity",
    "Health",
    "HealthParts",
    "HealthSnapshot",
    "HealthState",
    "Interaction",
    "InternalUser",
    "Kind",
    "Lead",
    "Link",
    "MailMessage",
    "MatchResult",
    "Opportunity",
    "OpportunityProfile",
    "OpportunityState",
    "Participant",
    "PartyKind",
    "PartyRules",
    "PhoneCall",
    "RecordIndex",
    "RecordKpis",
    "RecordRef",
    "ResponseKpis",
    "Role",
    "Settings",
    "Side",
    "SideResponse",
    "SimilarMatch",
    "SimilarStats",
    "SimilarWon",
    "Tier",
    "TopContact",
    "Trend",
    "Turn",
    "assign_threads",
    "build_activities",
    "compute_all",
    "compute_health",
    "compute_record_kpis",
    "match_activities",
    "registrable_domain",
    "similar_won",
]
