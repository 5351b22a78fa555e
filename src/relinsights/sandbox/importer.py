"""`import_archive`: a real mail archive (maildir, .tar.gz of one, mbox, .eml) as the sandbox's tenant.

    result = import_archive("enron-maildir-sample.tar.gz", ["enron.com"])
    SandboxServer(org=result.org).start();  print(result.report.summary())

What the archive becomes:
- **Users**: one per mailbox directory, its address being the owner's: the most frequent sender in its
  sent folders, else its most frequent internal recipient, else `<mailbox>@<first internal domain>`.
  Other addresses of the same person seen in the mailbox (`ebass@` beside `eric.bass@`, matched on the
  surname and initial of CMU names like `bass-e`) become proxy addresses. Two mailbox directories with
  the same owner (one person exported twice) are one user. Only mailbox owners are users: other
  internal addresses stay internal by their domain.
- **Domains**: each `--internal-domain` and every subdomain of it seen in the archive (internal means
  the domain or a subdomain: `enron.com` covers `ect.enron.com`), all verified, so the daemon's
  `internal_domains` read from Graph agree with the importer.
- **Folders**: `inbox`/`notes_inbox` -> Inbox (subfolders kept), `sent`/`_sent_mail`/`sent_items` -> Sent Items,
  `deleted_items` -> Deleted Items, `drafts`, `junk`, `archive` -> theirs; any other folder is a user folder
  under the mailbox root, named as in CMU's X-Folder header when it matches (`Bankrupt/Cleburne/Lone Star`).
  Lotus views (`all_documents`, `discussion_threads`) are not folders but views over the other folders:
  a copy there is ignored when the mailbox has the email elsewhere, else it is filed by direction
  (sent by the owner: Sent Items, else Inbox). So are files with no folder. `calendar` items (no start
  or end time in CMU's export) are skipped and counted.
- **Emails**: copies of one email are recognised by (From, Date, Subject, body) (Message-IDs are per file
  in the Enron corpus); each mailbox holds one item per folder the email was really in, and every copy
  shares one internetMessageId (the smallest Message-ID among the files). Conversation ids follow the
  normalised subject (`normalize_subject`), as Exchange groups mail that carries no Thread-Index.
  Bcc lists equal to Cc are dropped (CMU artefact); IMCEA-encapsulated senders are decoded.
- **Dates**: a Date that does not parse, the Lotus null date (<= 1980-01-02), dates after today, and
  stray clocks (past a gap of more than 180 days with under 1% of the mail beyond it, looking outwards
  from the median) are skipped, counted and named. The clock is set just after the newest message
  (or, with `rebase_to`, every date moves by one offset so that the clock is that moment).
- **CRM** (`org.crm`): an account per external registrable domain (not free-mail), a contact per external
  address (not role addresses like noreply@), owned by the user whose mailbox has most mail with them.
- Metadata only: bodies are hashed and dropped, as the sandbox serves no bodies.
"""

from __future__ import annotations

import json
import re
import resource
import time
from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import ids
from .archive import ArchiveFile, ArchiveReader
from .envelope import Envelope, Party, Unparseable, glance, parse_envelope
from .extensions import conversation_index, conversation_start, file_copy
from .import_crm import Parties, build_crm, domain_of, split_name
from .model import MessageContent, Org, User

# (well-known root folder, archive sub-path); roots starting with "@" are not folders.
Target = tuple[str, tuple[str, ...]]
VIEW, DIRECTION, CALENDAR = "@view", "@direction", "@calendar"
_ROOTS = {
    "inbox": "inbox",
    "notesinbox": "inbox",
    "sent": "sentitems",
    "sentmail": "sentitems",
    "sentitems": "sentitems",
    "sentmessages": "sentitems",
    "deleteditems": "deleteditems",
    "deleted": "deleteditems",
    "trash": "deleteditems",
    "drafts": "drafts",
    "junk": "junkemail",
    "junkemail": "junkemail",
    "spam": "junkemail",
    "archive": "archive",
    "alldocuments": VIEW,
    "discussionthreads": VIEW,
    "calendar": CALENDAR,
}
_SUBJECT_PREFIX = re.compile(r"^\s*(?:(?:re|fw|fwd|aw|wg|sv|antw)(?:\s*\[\d+\])?\s*:\s*)+", re.IGNORECASE)
_LOTUS_NULL = datetime(1980, 1, 2, tzinfo=UTC)  # Lotus' null date is 1979-12-31 16:00 PST
_STRAY_GAP = timedelta(days=180)
_DELIVERY = timedelta(seconds=4)  # recipients' copies arrive a moment after sending, as in deliver_message


def classify_folder(folder: tuple[str, ...]) -> Target:
    """Archive folder path -> where its messages go (see the module docstring)."""
    if not folder:
        return (DIRECTION, ())
    root = _ROOTS.get(re.sub(r"[^a-z0-9]", "", folder[0].lower()))
    if root is None:
        return ("msgfolderroot", folder)
    if root.startswith("@"):
        return (root, ())
    return (root, folder[1:])


def normalize_subject(subject: str) -> str:
    """The conversation topic: RE:/FW:/Fwd:/AW:/WG: prefixes (repeated) stripped, case and spacing folded."""
    return " ".join(_SUBJECT_PREFIX.sub("", subject).split()).lower()


def _cmu_folder_key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "_", name.lower())


# ---------------------------------------------------------------- report


@dataclass
class MailboxReport:
    name: str  # the archive's mailbox directory
    owner: str
    owner_rule: str
    user_id: str
    display_name: str
    aliases: list[str]
    delegates: list[str]  # others who sent from its sent folders (assistants)
    merged_with: list[str]  # other mailbox directories of the same owner
    files: int = 0
    folder_files: dict[str, int] = field(default_factory=dict)  # inbox, sentitems, view, user, calendar, ...
    emails: int = 0  # distinct emails
    sent: int = 0  # of them from the owner's addresses
    received: int = 0
    items: int = 0  # items created: one per folder an email was in
    two_way: int = 0  # counterparts both written to and heard from
    two_way_external: int = 0
    bad_dates: int = 0  # distinct emails of this mailbox skipped for their date


@dataclass
class ImportReport:
    source: str
    internal_domains: list[str]
    files: int = 0  # message files (and mbox messages) read
    files_filtered_out: int = 0  # of mailboxes left out by `users`
    mailboxes_in_archive: int = 0
    mailboxes: dict[str, MailboxReport] = field(default_factory=dict)
    users: int = 0
    emails: int = 0  # distinct emails imported
    duplicate_files: int = 0  # files that were another copy of an email already read
    items: int = 0  # mailbox items created
    lotus_view_files: int = 0
    view_only_emails: int = 0  # mailbox copies known only from a Lotus view (or no folder), filed by direction
    calendar_files: list[str] = field(default_factory=list)
    bad_dates: list[tuple[str, str]] = field(default_factory=list)  # (file, Date header) of skipped emails
    bad_date_files: int = 0
    unparseable: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    bcc_dropped: int = 0  # files whose Bcc only repeated Cc
    imcea_decoded: int = 0  # files whose sender was recovered from an IMCEA encapsulation
    dropped_addresses: int = 0  # recipient entries that were not addresses
    internal_addresses: int = 0
    external_addresses: int = 0
    external_domains: int = 0
    conversations: int = 0
    accounts: int = 0
    contacts: int = 0
    oldest: str = ""
    newest: str = ""
    clock: str = ""
    shifted_days: float = 0.0  # how far rebase_to moved every date
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    def summary(self) -> str:
        lines = [
            f"imported {self.source} in {self.seconds:.1f} s (peak RSS {self.peak_rss_mb:.0f} MB)",
            f"  mailboxes  {len(self.mailboxes)} of {self.mailboxes_in_archive} in the archive -> {self.users} users",
            f"  files      {self.files} read, {self.duplicate_files} duplicate copies, {self.lotus_view_files} in Lotus views"
            + (f", {self.files_filtered_out} of other mailboxes not read" if self.files_filtered_out else ""),
            f"  emails     {self.emails} distinct -> {self.items} mailbox items, {self.conversations} conversations",
            f"  dates      {self.oldest[:10]} .. {self.newest[:10]}; clock set to {self.clock}"
            + (f" (dates moved by {self.shifted_days:g} days)" if self.shifted_days else ""),
            f"  parties    {self.internal_addresses} internal, {self.external_addresses} external addresses "
            f"in {self.external_domains} domains",
            f"  CRM        {self.accounts} accounts, {self.contacts} contacts",
            f"  cleaned    {self.bcc_dropped} Bcc copies of Cc dropped, {self.imcea_decoded} IMCEA senders decoded, "
            f"{self.dropped_addresses} non-addresses dropped",
            f"  skipped    {self.bad_date_files} files with bad dates, {len(self.unparseable)} unparseable, "
            f"{len(self.calendar_files)} calendar items (no start/end)",
        ]
        lines += [f"    bad date   {src}: {date!r}" for src, date in self.bad_dates[:20]]
        lines += [f"    unparsed   {src}: {why}" for src, why in self.unparseable[:20]]
        more = max(0, len(self.bad_dates) - 20) + max(0, len(self.unparseable) - 20)
        if more:
            lines.append(f"    ... {more} more in the JSON report")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


@dataclass
class ImportResult:
    org: Org
    report: ImportReport


# ---------------------------------------------------------------- scanning


@dataclass(slots=True)
class _Email:
    env: Envelope
    source: str  # the first file it was read from (for reports)
    files: int
    where: dict[str, set[Target]]  # archive mailbox -> targets of its copies
    internal_rcpt: tuple[str, ...]  # its internal To/Cc addresses (owner evidence in each mailbox)


@dataclass
class _MailboxScan:
    files: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # files per kind of folder
    sent_from: Counter[str] = field(default_factory=Counter)
    received_by: Counter[str] = field(default_factory=Counter)
    other_from: Counter[str] = field(default_factory=Counter)  # senders outside the sent folders
    x_folders: dict[tuple[str, ...], str] = field(default_factory=dict)  # archive folder -> its X-Folder
    folder_names: dict[Target, str] = field(default_factory=dict)  # folder -> name as the user saw it


class _Scan:
    """Everything the build needs, collected in one pass over the archive (metadata only)."""

    def __init__(self, parties: Parties, report: ImportReport) -> None:
        self.parties = parties
        self.report = report
        self.emails: dict[bytes, _Email] = {}
        self.mailboxes: dict[str, _MailboxScan] = {}
        self.name_votes: dict[str, Counter[str]] = {}
        self.internal_domains_seen: set[str] = set()
        self.shared: dict[Party, Party] = {}

    def add(self, f: ArchiveFile) -> None:
        rep = self.report
        rep.files += 1
        mb = self.mailboxes.setdefault(f.mailbox, _MailboxScan())
        mb.files += 1
        target = classify_folder(f.folder)
        mb.kinds["user" if target[0] == "msgfolderroot" else target[0].lstrip("@")] += 1
        if target[0] == CALENDAR:
            rep.calendar_files.append(f.source)
            return
        g = glance(f.data)
        email = self.emails.get(g.digest)
        if email is None:
            try:
                env = parse_envelope(f.data, g)
            except Unparseable as exc:
                rep.unparseable.append((f.source, str(exc)))
                return
            env.sender, env.to, env.cc, env.bcc = self._share(env)
            email = self.emails[g.digest] = _Email(env, f.source, 0, {}, self._first_seen(env))
        else:
            rep.duplicate_files += 1
            if g.message_id and (not email.env.message_id or g.message_id < email.env.message_id):
                email.env.message_id = g.message_id  # the same id whatever order files come in
        env = email.env
        if target[0] == VIEW:
            rep.lotus_view_files += 1
        rep.bcc_dropped += env.bcc_was_cc
        rep.imcea_decoded += env.imcea_decoded
        rep.dropped_addresses += env.dropped_addresses
        email.files += 1
        email.where.setdefault(f.mailbox, set()).add(target)
        if f.folder and g.x_folder and f.folder not in mb.x_folders:
            mb.x_folders[f.folder] = g.x_folder
            _learn_folder_names(mb.folder_names, f.folder, target, g.x_folder)
        self._count_parties(mb, email, target)

    def _share(self, env: Envelope) -> tuple[Party, tuple[Party, ...], tuple[Party, ...], tuple[Party, ...]]:
        """One tuple per distinct party across the archive: 40k emails name 30k people 400k times."""
        s = self.shared

        def one(p: Party) -> Party:
            return s.setdefault(p, p)

        return one(env.sender), tuple(map(one, env.to)), tuple(map(one, env.cc)), tuple(map(one, env.bcc))

    def _first_seen(self, env: Envelope) -> tuple[str, ...]:
        """Once per email: internal domains seen, and its internal To/Cc recipients."""
        for _, a in (env.sender, *env.to, *env.cc, *env.bcc):
            dom = domain_of(a)
            if self.parties.is_internal_domain(dom):
                self.internal_domains_seen.add(dom)
        return tuple(dict.fromkeys(a for _, a in (*env.to, *env.cc) if self.parties.is_internal(a)))

    def _count_parties(self, mb: _MailboxScan, email: _Email, target: Target) -> None:
        """Once per file: who sends from and receives in this mailbox (owner evidence), display names."""
        name, addr = email.env.sender
        if name and name.lower() != addr:
            self.name_votes.setdefault(addr, Counter())[name] += 1
        if target[0] == "sentitems":
            mb.sent_from[addr] += 1
        else:
            mb.other_from[addr] += 1
            mb.received_by.update(email.internal_rcpt)


def _learn_folder_names(known: dict[Target, str], folder: tuple[str, ...], target: Target, x_folder: str) -> None:
    """CMU lower-cased folder names ('cleburne_lone_star'); X-Folder has the originals
    ('\\ExMerge - Germany, Chris\\Bankrupt\\Cleburne/Lone Star'): the tails match component by component."""
    root, sub = target
    if root.startswith("@") or not sub:
        return
    parts = [p for p in x_folder.split("\\") if p][-len(folder) :]
    if len(parts) != len(folder) or any(_cmu_folder_key(p) != d for p, d in zip(parts, folder, strict=True)):
        return
    shown = parts[len(folder) - len(sub) :]
    for i in range(len(sub)):
        known.setdefault((root, sub[: i + 1]), shown[i].strip() or sub[i])


# ---------------------------------------------------------------- owners


@dataclass
class _Owner:
    address: str
    rule: str
    aliases: list[str]
    delegates: list[str] = field(default_factory=list)


def _personal(address: str) -> bool:
    local = address.split("@", 1)[0]
    return bool(local) and not local.startswith(".") and not local.endswith(".")


def _ranked(counter: Counter[str], keep: Any) -> list[str]:
    return [a for a, _ in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])) if keep(a)]


def _derive_owner(name: str, scan: _MailboxScan, parties: Parties, default_domain: str) -> _Owner:
    sent = _ranked(scan.sent_from, lambda a: parties.is_internal(a) and _personal(a))
    if sent:
        owner = _Owner(sent[0], "most frequent sender in its sent folders", [])
    else:
        received = _ranked(scan.received_by, _personal)
        senders = _ranked(scan.other_from, lambda a: parties.is_internal(a) and _personal(a))
        if received:
            owner = _Owner(received[0], "most frequent internal recipient", [])
        elif senders:  # a lone .eml or a folder-less mbox of one's own mail
            owner = _Owner(senders[0], "most frequent internal sender", [])
        else:
            local = re.sub(r"[^a-z0-9._-]", "", name.lower()) or "mailbox"
            owner = _Owner(f"{local}@{default_domain}", "no own address in the archive: made from its name", [])
    # CMU names are 'surname-initial': other addresses of that person are aliases.
    m = re.fullmatch(r"([a-z]+)-([a-z])[a-z0-9]*", name.lower())
    if m:
        surname, initial = m.groups()
        seen = scan.sent_from + scan.received_by
        for a in _ranked(seen, lambda a: parties.is_internal(a) and _personal(a)):
            local = a.split("@", 1)[0]
            # 'w..delainey' is CMU's David W. Delainey: a lone middle initial, the first name lost.
            initial_ok = local[0] == initial or re.match(r"[a-z]\.\.", local) is not None
            if a != owner.address and seen[a] >= 3 and surname in local and initial_ok:
                owner.aliases.append(a)
    owner.delegates = [a for a in sent if a != owner.address and a not in owner.aliases]
    return owner


def _display_name(owner: str, votes: Counter[str] | None, x_folders: Iterable[str]) -> str:
    if votes:
        return sorted(votes.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
    for xf in x_folders:
        parts = [p for p in xf.split("\\") if p]
        if not parts:
            continue
        top = parts[0]
        if top.startswith("ExMerge - "):
            return top.removeprefix("ExMerge - ").strip()
        if top.endswith("(Non-Privileged)") and len(parts) > 1:
            return parts[1].strip()
        words = []
        for w in top.split("_"):
            if re.fullmatch(r"[A-Z][a-z]{2}\d{4}|\d+", w):
                break
            words.append(w)
        if words:
            return " ".join(words)
    first, last = split_name("", owner)
    return f"{first} {last}".strip()


# ---------------------------------------------------------------- the import


def import_archive(
    path: str | Path,
    internal_domains: Collection[str],
    *,
    users: Collection[str] | None = None,
    seed: int = 1,
    name: str | None = None,
    today: datetime | None = None,
    rebase_to: datetime | None = None,
) -> ImportResult:
    """Load a mail archive as a sandbox `Org` (see the module docstring for the rules).

    users: archive mailbox names (directories, e.g. 'fossum-d') to import; None: all of them.
    today: dates after it are bad (default: the real now).
    rebase_to: move every date by one offset so that the clock is this moment (intervals kept), for a
    daemon that syncs by its own clock; None: the archive's own dates.
    """
    started = time.perf_counter()
    domains = [d.lower().strip(".") for d in internal_domains if d.strip()]
    if not domains:
        raise ValueError("at least one internal domain is needed (--internal-domain)")
    parties = Parties(domains)
    report = ImportReport(source=str(path), internal_domains=domains)
    reader = ArchiveReader(Path(path), only=set(users) if users else None)
    scan = _Scan(parties, report)
    for f in reader:
        scan.add(f)
    report.unparseable += reader.skipped
    report.files_filtered_out = reader.files_filtered
    report.mailboxes_in_archive = len(reader.mailboxes_seen)
    if users:
        missing = sorted(set(users) - reader.mailboxes_seen)
        if missing:
            raise ValueError(f"no such mailbox in the archive: {', '.join(missing)}")
    valid, bad_per_box = _drop_bad_dates(scan, report, today or datetime.now(UTC))
    if not valid:
        raise ValueError(f"no importable message in {path}")
    org = _build(scan, valid, report, domains, seed, name, rebase_to)
    for box, n in bad_per_box.items():
        report.mailboxes[box].bad_dates = n
    report.seconds = round(time.perf_counter() - started, 2)
    report.peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return ImportResult(org, report)


def plausible_range(dated: list[datetime]) -> tuple[datetime, datetime]:
    """The span of real mail in sorted send times: from the median outwards, a gap of more than
    `_STRAY_GAP` beyond which lie fewer than 1% of the messages cuts off stray clocks."""
    n = len(dated)
    few = n // 100  # fewer than 1%: never in an archive of under a hundred messages
    lo, hi = 0, n - 1
    for i in range(n // 2, 0, -1):
        if i <= few and dated[i] - dated[i - 1] > _STRAY_GAP:
            lo = i
            break
    for j in range(n // 2, n - 1):
        if n - 1 - j <= few and dated[j + 1] - dated[j] > _STRAY_GAP:
            hi = j
            break
    return dated[lo], dated[hi]


def _drop_bad_dates(scan: _Scan, report: ImportReport, today: datetime) -> tuple[list[_Email], Counter[str]]:
    dated = sorted(s for e in scan.emails.values() if (s := e.env.sent) and _LOTUS_NULL < s <= today)
    lo, hi = plausible_range(dated) if dated else (today, today)
    valid, bad_per_box = [], Counter[str]()
    for e in scan.emails.values():
        s = e.env.sent
        if s is not None and lo <= s <= hi:
            valid.append(e)
            continue
        report.bad_dates.append((e.source, e.env.date_text or "(no Date header)"))
        report.bad_date_files += e.files
        bad_per_box.update(e.where.keys())
    report.bad_dates.sort()
    valid.sort(key=lambda e: (e.env.sent, e.env.digest))
    return valid, bad_per_box


def _build(
    scan: _Scan,
    valid: list[_Email],
    report: ImportReport,
    domains: list[str],
    seed: int,
    name: str | None,
    rebase_to: datetime | None,
) -> Org:
    parties = scan.parties
    newest = valid[-1].env.sent
    assert newest is not None
    clock = (newest + _DELIVERY + timedelta(minutes=1)).replace(second=0, microsecond=0)
    shift = timedelta(0) if rebase_to is None else rebase_to.replace(second=0, microsecond=0) - clock
    clock, newest = clock + shift, newest + shift
    report.shifted_days = round(shift.total_seconds() / 86400, 2)
    org = Org(
        seed=seed,
        name=name or domains[0].split(".")[0].title(),
        tenant_id=ids.guid(seed, "tenant", domains[0]),
        now=clock,
    )
    for d in [*domains, *sorted(scan.internal_domains_seen - set(domains))]:
        org.add_domain(d, is_default=d == domains[0])
    org.add_domain(f"{domains[0].split('.')[0]}.onmicrosoft.com", is_initial=True)
    names = {a: sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for a, v in scan.name_votes.items()}
    user_of = _add_users(org, scan, report, names, domains[0])
    delegates = {n: m.delegates for n, m in report.mailboxes.items()}
    builder = _MailBuilder(org, scan, user_of, names, delegates, shift)
    for email in valid:
        builder.add(email)
    report.users = len({u for u in user_of.values()})
    report.emails = len(valid)
    report.items = builder.items
    report.view_only_emails = builder.view_only
    report.conversations = len(builder.conversations)
    report.oldest, report.newest = ((valid[0].env.sent or newest) + shift).isoformat(), newest.isoformat()
    report.clock = clock.isoformat()
    external = [a for a in builder.addresses if not parties.is_internal(a)]
    report.internal_addresses = len(builder.addresses) - len(external)
    report.external_addresses = len(external)
    report.external_domains = len({domain_of(a) for a in external})
    builder.finish_report(report)
    build_crm(org.crm, seed, builder.interactions, names)
    report.accounts, report.contacts = len(org.crm.companies), len(org.crm.contacts)
    owners = {c.owner_id for c in org.crm.companies.values()}
    for u in org.users.values():
        u.role = "seller" if u.id in owners else "staff"
    return org


def _add_users(
    org: Org, scan: _Scan, report: ImportReport, names: dict[str, str], default_domain: str
) -> dict[str, str]:
    """One user per owner address; returns archive mailbox -> user id."""
    owners = {n: _derive_owner(n, mb, scan.parties, default_domain) for n, mb in sorted(scan.mailboxes.items())}
    primaries = {o.address for o in owners.values()}
    by_owner: dict[str, list[str]] = {}
    for n, o in owners.items():
        o.aliases = [a for a in o.aliases if a not in primaries]
        by_owner.setdefault(o.address, []).append(n)
    claimed: set[str] = set(primaries)
    user_of: dict[str, str] = {}
    for address, boxes in sorted(by_owner.items()):
        boxes.sort(key=lambda n: (-scan.mailboxes[n].files, n))
        aliases = [a for n in boxes for a in owners[n].aliases if a not in claimed]
        claimed.update(aliases)
        x_folders = [xf for n in boxes for xf in scan.mailboxes[n].x_folders.values()]
        display = _display_name(address, scan.name_votes.get(address), x_folders)
        first, last = split_name(display, address)
        user = User(
            id=ids.guid(org.seed, "user", address),
            display_name=display,
            given_name=first or None,
            surname=last or None,
            user_principal_name=address,
            mail=address,
            proxy_addresses=[f"SMTP:{address}", *(f"smtp:{a}" for a in dict.fromkeys(aliases))],
            created=org.created,
        )
        org.add_user(user)
        for n in boxes:
            user_of[n] = user.id
            report.mailboxes[n] = MailboxReport(
                name=n,
                owner=address,
                owner_rule=owners[n].rule,
                user_id=user.id,
                display_name=display,
                aliases=list(dict.fromkeys(aliases)),
                delegates=owners[n].delegates,
                merged_with=[b for b in boxes if b != n],
                files=scan.mailboxes[n].files,
                folder_files=dict(sorted(scan.mailboxes[n].kinds.items())),
            )
    return user_of


class _MailBuilder:
    """Files each email's copies into the users' folders and counts what the report and CRM need."""

    def __init__(
        self,
        org: Org,
        scan: _Scan,
        user_of: dict[str, str],
        names: dict[str, str],
        delegates: dict[str, list[str]],
        shift: timedelta,
    ) -> None:
        self.org, self.scan, self.user_of, self.names, self.shift = org, scan, user_of, names, shift
        self.folders: dict[tuple[str, Target], str] = {}
        self.conversations: dict[str, list[Any]] = {}  # topic -> [conversation id, index header, emails so far]
        self.parties: dict[Party, Party] = {}
        self.addresses: set[str] = set()
        self.interactions: dict[str, Counter[str]] = {}
        self.items = 0
        self.view_only = 0
        self.stats: dict[str, list[int]] = {n: [0, 0, 0, 0] for n in user_of}  # emails, sent, received, items
        self.wrote_to: dict[str, set[str]] = {n: set() for n in user_of}
        self.heard_from: dict[str, set[str]] = {n: set() for n in user_of}
        # Who sends from a mailbox: its owner's addresses and its delegates (assistants).
        self.senders: dict[str, set[str]] = {uid: set(org.users[uid].addresses()) for uid in set(user_of.values())}
        for box, uid in user_of.items():
            self.senders[uid].update(delegates.get(box, ()))

    def _party(self, p: Party) -> Party:
        """The party as Graph shows it: a bare address gets the name the directory or its mail gives it."""
        shown = self.parties.get(p)
        if shown is None:
            name, addr = p
            if not name or name.lower() == addr:
                u = self.org.find_user(addr)
                name = u.display_name if u else self.names.get(addr, addr)
            shown = self.parties[p] = (name, addr)
        return shown

    def add(self, email: _Email) -> None:
        env = email.env
        assert env.sent is not None
        sent = env.sent + self.shift
        content = MessageContent(
            internet_message_id=env.message_id or f"<{env.digest.hex()}@import.relinsights.invalid>",
            conversation_id="",
            conversation_index="",
            subject=env.subject,
            sender=self._party(env.sender),
            from_=self._party(env.sender),
            to=[self._party(p) for p in env.to],
            cc=[self._party(p) for p in env.cc],
            bcc=[self._party(p) for p in env.bcc],
            sent=sent,
            has_attachments=env.has_attachments,
        )
        topic = normalize_subject(env.subject)  # an empty one too: "RE:" answers the blank subject
        conv = self.conversations.get(topic)
        if conv is None:
            conv = self.conversations[topic] = [*conversation_start(self.org.seed, topic, sent), 0]
        content.conversation_id = conv[0]
        content.conversation_index = conversation_index(conv[1], conv[2], sent)
        conv[2] += 1
        people = {a for _, a in (env.sender, *env.to, *env.cc, *env.bcc)}
        self.addresses |= people
        external = [a for a in people if not self.scan.parties.is_internal(a)]
        per_user: dict[str, set[Target]] = {}
        for box, targets in email.where.items():
            per_user.setdefault(self.user_of[box], set()).update(targets)
            self._count(box, env)
        for uid, targets in sorted(per_user.items()):
            self._file(uid, content, env, targets, email.where)
            for a in external:
                self.interactions.setdefault(a, Counter())[uid] += 1

    def _file(
        self, uid: str, content: MessageContent, env: Envelope, targets: set[Target], where: dict[str, set[Target]]
    ) -> None:
        own = env.sender[1] in self.senders[uid]
        real = sorted(t for t in targets if not t[0].startswith("@"))
        if not real:
            self.view_only += 1
            real = [("sentitems", ()) if own else ("inbox", ())]
        boxes = [b for b in where if self.user_of[b] == uid]  # two only when one person was exported twice
        ordinals: Counter[bool] = Counter()
        for t in real:
            sender_copy = own or t[0] == "sentitems"  # a delegate's mail in the Sent Items is the sender's copy
            file_copy(
                self.org,
                uid,
                content,
                self._folder(uid, t, boxes),
                received=content.sent if sender_copy else content.sent + _DELIVERY,
                sender_copy=sender_copy,
                ordinal=ordinals[sender_copy],
            )
            ordinals[sender_copy] += 1
            self.items += 1
            self.stats[boxes[0]][3] += 1

    def _folder(self, uid: str, target: Target, boxes: list[str]) -> str:
        key = (uid, target)
        fid = self.folders.get(key)
        if fid is not None:
            return fid
        root, sub = target
        if not sub:
            fid = self.org.mailboxes[uid].well_known[root]
        else:
            parent = self._folder(uid, (root, sub[:-1]), boxes)
            fid = self.org.create_folder(uid, parent, self._folder_name(target, boxes))
        self.folders[key] = fid
        return fid

    def _folder_name(self, target: Target, boxes: list[str]) -> str:
        for b in boxes:
            found = self.scan.mailboxes[b].folder_names.get(target)
            if found:
                return found
        return target[1][-1]

    def _count(self, box: str, env: Envelope) -> None:
        s = self.stats[box]
        s[0] += 1
        mine = self.senders[self.user_of[box]]
        if env.sender[1] in mine:
            s[1] += 1
            self.wrote_to[box] |= {a for _, a in (*env.to, *env.cc)} - mine
        else:
            s[2] += 1
            self.heard_from[box].add(env.sender[1])

    def finish_report(self, report: ImportReport) -> None:
        for box, (emails, sent, received, items) in self.stats.items():
            r = report.mailboxes[box]
            r.emails, r.sent, r.received, r.items = emails, sent, received, items
            both = self.wrote_to[box] & self.heard_from[box]
            r.two_way = len(both)
            r.two_way_external = sum(1 for a in both if not self.scan.parties.is_internal(a))
