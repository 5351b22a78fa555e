"""Typed configuration: one TOML file, validated up front, every problem reported with its key path.

Secrets never live in this file: a tenant names a certificate file, a secret file or an
environment variable, and `auth.py` reads the secret itself when it needs it.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import idna
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

EX_CONFIG = 78
DEFAULT_CONFIG_PATH = Path("/etc/relinsights/relinsights.toml")
CONFIG_ENV = "RELINSIGHTS_CONFIG"

# Folders skipped by default: they hold no real customer conversation (or not yet / no longer).
DEFAULT_EXCLUDED_FOLDERS = ["deleteditems", "junkemail", "drafts", "outbox", "syncissues"]
DEFAULT_IGNORED_LOCALPARTS = [
    "noreply",
    "no-reply",
    "donotreply",
    "do-not-reply",
    "mailer-daemon",
    "postmaster",
    "notifications",
    "notification",
    "bounce",
    "bounces",
    "newsletter",
]
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_GUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


class ConfigError(Exception):
    """The configuration cannot be used; `problems` lists each one as 'key.path: what is expected'."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: " + "; ".join(problems))

    def render(self) -> str:
        lines = [f"configuration error in {self.source}:"]
        lines += [f"  - {p}" for p in self.problems]
        lines.append("fix these keys (see config/relinsights.example.toml for every key) and try again")
        return "\n".join(lines)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def normalise_domain(value: str) -> str:
    """Lower-case IDNA (punycode) form, so 'Bücher.example' and 'xn--bcher-kva.example' compare equal."""
    value = value.strip().strip(".").lower()
    if not value:
        raise ValueError("empty domain")
    try:
        return idna.encode(value, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"not a valid domain name: {value!r} ({exc})") from exc


def _domains(values: list[str]) -> list[str]:
    return sorted({normalise_domain(v) for v in values})


def _addresses(values: list[str]) -> list[str]:
    out = set()
    for v in values:
        v = v.strip().lower()
        if v.count("@") != 1 or not v.split("@")[0] or "." not in v.split("@")[1]:
            raise ValueError(f"not an email address: {v!r}")
        local, domain = v.split("@")
        out.add(f"{local}@{normalise_domain(domain)}")
    return sorted(out)


class CredentialConfig(_Strict):
    """Exactly one of certificate, secret_file, secret_env."""

    certificate: Path | None = Field(
        default=None, description="PEM file with the private key and the certificate registered on the app"
    )
    certificate_password_env: str | None = None
    secret_file: Path | None = None
    secret_env: str | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> CredentialConfig:
        chosen = [n for n in ("certificate", "secret_file", "secret_env") if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError(
                "set exactly one of certificate, secret_file, secret_env "
                f"(found {', '.join(chosen) or 'none'}); a secret is never written inline"
            )
        return self


class ScopeConfig(_Strict):
    """Which mailboxes are synced: all enabled users, the members of a group, or a list; minus opt-outs."""

    mode: Literal["all", "group", "list"] = "all"
    group_id: str | None = None
    mailboxes: list[str] = []
    exclude_users: list[str] = []
    exclude_groups: list[str] = []

    _norm_mailboxes = field_validator("mailboxes", "exclude_users")(_addresses)

    @model_validator(mode="after")
    def _mode_fields(self) -> ScopeConfig:
        if self.mode == "group" and not self.group_id:
            raise ValueError("mode = 'group' needs group_id (the Entra group's object id)")
        if self.mode == "list" and not self.mailboxes:
            raise ValueError("mode = 'list' needs a non-empty mailboxes list")
        for gid in [self.group_id, *self.exclude_groups]:
            if gid and not _GUID_RE.match(gid):
                raise ValueError(f"group ids are GUIDs, got {gid!r}")
        return self


class SyncConfig(_Strict):
    interval_minutes: Annotated[float, Field(ge=0.05, le=1440)] = 5
    # How long a daemon holds a mailbox it syncs before another may take it over (renewed while it works).
    lease_seconds: Annotated[int, Field(ge=5, le=86400)] = 900
    folders: Literal["all"] | list[str] = "all"
    exclude_folders: list[str] = DEFAULT_EXCLUDED_FOLDERS
    lookback_days: Annotated[int, Field(ge=1, le=1825)] = 365
    calendar_future_days: Annotated[int, Field(ge=0, le=730)] = 90
    calendar: bool = True
    page_size: Annotated[int, Field(ge=10, le=1000)] = 500
    max_concurrent_requests: Annotated[int, Field(ge=1, le=256)] = 16
    per_mailbox_concurrency: Annotated[int, Field(ge=1, le=4)] = 4
    max_parallel_mailboxes: Annotated[int, Field(ge=1, le=256)] = 8
    max_throttle_wait_seconds: Annotated[int, Field(ge=1)] = 900

    @model_validator(mode="after")
    def _window(self) -> SyncConfig:
        if self.lookback_days + self.calendar_future_days > 1825:
            raise ValueError("lookback_days + calendar_future_days must be at most 1825 (a Graph limit)")
        return self


class HealthConfig(_Strict):
    window_days: Annotated[int, Field(ge=7, le=365)] = 90
    weight_email: Annotated[float, Field(ge=0.5, le=1.5)] = 1.0
    weight_meeting: Annotated[float, Field(ge=1.5, le=4.5)] = 3.0
    weight_call: Annotated[float, Field(ge=1.0, le=3.0)] = 2.0
    expected_interactions_per_week: Annotated[float, Field(gt=0, le=50)] = 1.0
    good_min: Annotated[int, Field(ge=1, le=100)] = 60
    fair_min: Annotated[int, Field(ge=1, le=100)] = 40

    @model_validator(mode="after")
    def _ranges(self) -> HealthConfig:
        if self.fair_min >= self.good_min:
            raise ValueError("fair_min must be below good_min")
        return self


class KpiConfig(_Strict):
    """The constants of docs/kpis.md; defaults are the documented ones."""

    email_write_minutes: Annotated[float, Field(ge=0)] = 5.0
    email_read_minutes: Annotated[float, Field(ge=0)] = 2.5
    response_window_hours: Annotated[float, Field(gt=0)] = 168.0
    business_hours: bool = False
    workday_start: time = time(9, 0)
    workday_end: time = time(17, 0)
    workdays: list[Annotated[int, Field(ge=1, le=7)]] = [1, 2, 3, 4, 5]
    lead_requires_owner: bool = False
    opportunity_requires_team: bool = True
    ignored_localparts: list[str] = DEFAULT_IGNORED_LOCALPARTS
    excluded_addresses: list[str] = []
    excluded_domains: list[str] = []
    free_mail_domains: list[str] = Field(default=[], description="added to the shipped free-mail list")
    account_domains: dict[str, list[str]] = Field(
        default={}, description="account id -> extra domains mapped to that account"
    )
    similar_won_count: Annotated[int, Field(ge=1, le=50)] = 5
    compute_at: time = Field(default=time(2, 0), description="tenant-local time of the daemon's daily computation")
    health: HealthConfig = HealthConfig()

    _norm_addr = field_validator("excluded_addresses")(_addresses)
    _norm_dom = field_validator("excluded_domains", "free_mail_domains")(_domains)

    @model_validator(mode="after")
    def _hours(self) -> KpiConfig:
        if self.workday_end <= self.workday_start:
            raise ValueError("workday_end must be after workday_start")
        return self


PARENTS = ("contact", "account", "lead", "opportunity")
PARENT_SETS = {"contact": "contacts", "account": "accounts", "lead": "leads", "opportunity": "opportunities"}

# Our KPI names -> the Dataverse columns of the KPI tables (dataverse.md). `writeback.columns` overrides
# any of them ("" leaves a column out), so a tenant can point the write-back at tables of its own.
DEFAULT_KPI_COLUMNS = {
    "name": "msdyn_name",
    "emails_sent": "msdyn_emailssent",
    "emails_received": "msdyn_emailsreceived",
    "meetings_sent": "msdyn_meetingssent",
    "meetings_received": "msdyn_meetingsreceived",
    "calls_made": "msdyn_phonecallsmade",
    "calls_received": "msdyn_phonecallsreceived",
    "time_spent_by_team": "msdyn_timespentbyteam",
    "time_spent_by_customer": "msdyn_timespentbycustomer",
    "response_time_by_us": "msdyn_averagefirstresponsetimebyusinhrs",
    "response_time_by_them": "msdyn_averagefirstresponsetimebytheminhrs",
    "response_rate_by_us": "msdyn_responseratebyus",
    "response_rate_by_them": "msdyn_responseratebythem",
    "health_score": "msdyn_relationshiphealthscorevalue",
    "health_state": "msdyn_relationshiphealthscorestate",
    "health_trend": "msdyn_relationshiphealthtrend",
    "accuracy": "msdyn_computationaccuracy",
    "date": "msdyn_date",
    "updated_at": "msdyn_acilastupdatetimestamp",
    "last_activity_time": "msdyn_lastactivitybyteam",
    "last_activity_direction": "msdyn_lastactivitydirection",
    "last_activity_id": "msdyn_lastactivityid",
    "last_activity_type": "msdyn_lastactivitytype",
    "next_activity_time": "msdyn_nextactivitybyteam",
    "next_activity_direction": "msdyn_nextactivitydirection",
    "next_activity_id": "msdyn_nextactivityid",
    "next_activity_type": "msdyn_nextactivitytype",
    "number_of_opportunities": "msdyn_numberofopportunities",
}


class TableRef(_Strict):
    """A Dataverse table by its logical name and entity set name (they differ in more than an 's')."""

    table: str
    entity_set: str

    @property
    def primary_key(self) -> str:
        return f"{self.table}id"


class ParentMapping(_Strict):
    """Where the KPIs of one kind of record go (defaults: the Dynamics 365 Sales msdyn tables)."""

    kpi: TableRef
    kpi_parent: str = Field(description="navigation property on the KPI row to its parent record")
    parent_kpi: str = Field(description='lookup on the parent to its KPI row; "" = never set it')
    daily: TableRef | None = None
    daily_parent: str = "msdyn_entityid"
    daily_parent_id: str = Field(default="", description='string column holding the parent id; "" = none')


def _default_parent(parent: str) -> ParentMapping:
    return ParentMapping(
        kpi=TableRef(table=f"msdyn_{parent}kpiitem", entity_set=f"msdyn_{parent}kpiitems"),
        kpi_parent=f"msdyn_{parent}id",
        parent_kpi=f"msdyn_{parent}kpiid",
        daily=TableRef(table=f"msdyn_daily{parent}kpiitem", entity_set=f"msdyn_daily{parent}kpiitems"),
        daily_parent_id=f"msdyn_{parent}id",
    )


class WritebackConfig(_Strict):
    enabled: bool = Field(default=True, description="write KPIs back to Dataverse (needs dataverse_url)")
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 100
    max_parallel: Annotated[int, Field(ge=1, le=52)] = 4
    daily_series: bool = True
    top_contacts: bool = True
    contact: ParentMapping = _default_parent("contact")
    account: ParentMapping = _default_parent("account")
    lead: ParentMapping = _default_parent("lead")
    opportunity: ParentMapping = _default_parent("opportunity")
    # Top contacts: the team members who contacted the record most (ours) and its people we contacted most.
    most_contacted: TableRef = TableRef(table="msdyn_mostcontacted", entity_set="msdyn_mostcontacteds")
    most_contacted_by: TableRef = TableRef(table="msdyn_mostcontactedby", entity_set="msdyn_mostcontactedbies")
    columns: dict[str, str] = {}

    @field_validator("columns")
    @classmethod
    def _known(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(v) - set(DEFAULT_KPI_COLUMNS))
        if unknown:
            raise ValueError(f"unknown KPI name(s) {', '.join(unknown)}; known: {', '.join(DEFAULT_KPI_COLUMNS)}")
        return v

    def column(self, kpi: str) -> str:
        """The Dataverse column of one KPI ("" when the mapping leaves it out)."""
        return self.columns.get(kpi, DEFAULT_KPI_COLUMNS[kpi])

    def parent(self, entity: str) -> ParentMapping:
        mapping: ParentMapping = getattr(self, entity)
        return mapping


class TenantConfig(_Strict):
    name: str
    tenant_id: str
    client_id: str
    credential: CredentialConfig
    enabled: bool = Field(True, description="enhanced insights (Exchange sync) on for this tenant")
    authority: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com/v1.0"
    dataverse_url: str | None = None
    graph_scope: str | None = Field(default=None, description="default: the origin of graph_url + /.default")
    dataverse_scope: str | None = Field(default=None, description="default: the origin of dataverse_url + /.default")
    ca_bundle: Path | None = None
    internal_domains: list[str] = []
    timezone: str = "UTC"
    scope: ScopeConfig = ScopeConfig()
    sync: SyncConfig = SyncConfig()
    kpi: KpiConfig = KpiConfig()
    writeback: WritebackConfig = WritebackConfig()

    _norm_dom = field_validator("internal_domains")(_domains)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError("use lower-case letters, digits, '-' or '_' (at most 63), starting with a letter or digit")
        return v

    @field_validator("tenant_id")
    @classmethod
    def _tenant_id(cls, v: str) -> str:
        if not (_GUID_RE.match(v) or re.match(r"^[a-z0-9-]+(\.[a-z0-9-]+)+$", v.lower())):
            raise ValueError("the directory (tenant) id: a GUID or a verified domain such as contoso.onmicrosoft.com")
        return v

    @field_validator("client_id")
    @classmethod
    def _client_id(cls, v: str) -> str:
        if not _GUID_RE.match(v):
            raise ValueError("the application (client) id: a GUID")
        return v

    @field_validator("authority", "graph_url", "dataverse_url")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v.startswith("https://"):
            raise ValueError(f"must be an https:// URL, got {v!r}")
        return v.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {v!r} (for example 'Europe/Paris')") from exc
        return v

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def graph_token_scope(self) -> str:
        return self.graph_scope or _origin(self.graph_url) + "/.default"

    @property
    def dataverse_token_scope(self) -> str | None:
        if self.dataverse_scope:
            return self.dataverse_scope
        return _origin(self.dataverse_url) + "/.default" if self.dataverse_url else None


def _origin(url: str) -> str:
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


class DatabaseConfig(_Strict):
    url: str | None = Field(default=None, description="SQLAlchemy URL; default sqlite under service.state_dir")
    pool_size: Annotated[int, Field(ge=1, le=100)] = 5


class LoggingConfig(_Strict):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class ServiceConfig(_Strict):
    state_dir: Path = Path("/var/lib/relinsights")
    # host:port of /healthz and /metrics (Prometheus); "" turns the endpoint off. Loopback by default.
    http_listen: str = "127.0.0.1:9464"
    # A KPI run keeps the memory it frees, for reuse, while its resident size is under this (MiB): fewer page
    # faults, runs 8-17% faster at 2,000,000 activities (README, Sizing). Above it, freed memory goes back to the
    # system at once. 0 = never kept.
    compute_keep_freed_below_mib: Annotated[int, Field(ge=0, le=1_048_576)] = 900

    @field_validator("http_listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        if v and (":" not in v or not v.rsplit(":", 1)[1].isdigit()):
            raise ValueError(f'expected host:port such as 127.0.0.1:9464, or "" to turn it off; got {v!r}')
        return v


class Config(_Strict):
    service: ServiceConfig = ServiceConfig()
    database: DatabaseConfig = DatabaseConfig()
    logging: LoggingConfig = LoggingConfig()
    tenants: list[TenantConfig] = Field(default=[], alias="tenant")
    source: str = Field("<memory>", exclude=True)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _unique(self) -> Config:
        names = [t.name for t in self.tenants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tenant names must be unique; repeated: {', '.join(dupes)}")
        return self

    @property
    def database_url(self) -> str:
        if self.database.url:
            return self.database.url
        return f"sqlite:///{(self.service.state_dir / 'relinsights.db').resolve()}"

    def tenant(self, name: str) -> TenantConfig:
        for t in self.tenants:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.tenants) or "none configured"
        raise ConfigError(self.source, [f"tenant {name!r} is not in the configuration (known: {known})"])


def _key_path(loc: tuple[int | str, ...], data: dict[str, Any]) -> str:
    """Render a pydantic location as a TOML key path: tenant[0].credential.secret_env (with the tenant's name)."""
    parts: list[str] = []
    node: Any = data
    for item in loc:
        if isinstance(item, int):
            label = f"[{item}]"
            if isinstance(node, list) and item < len(node) and isinstance(node[item], dict) and "name" in node[item]:
                label = f"[{item}] ({node[item]['name']})"
            parts.append(label)
            node = node[item] if isinstance(node, list) and item < len(node) else None
        else:
            if item in {"function-after", "function-before", "list", "literal", "str"} or "[" in str(item):
                continue
            parts.append(("." if parts else "") + str(item))
            node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts) or "(top level)"


def _format_errors(exc: ValidationError, data: dict[str, Any]) -> list[str]:
    problems = []
    for err in exc.errors():
        path = _key_path(tuple(err["loc"]), data)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (misspelt, or not supported by this version)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        problems.append(f"{path}: {msg}")
    return problems


def parse_config(data: dict[str, Any], source: str = "<memory>") -> Config:
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError(source, _format_errors(exc, data)) from None


def config_path(explicit: str | Path | None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG_PATH


def load_config(path: str | Path | None = None) -> Config:
    p = config_path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            str(p), [f"file not found; create one with `relinsights init {p}` or pass --config PATH"]
        ) from None
    except OSError as exc:
        raise ConfigError(str(p), [f"cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(p), [f"not valid TOML: {exc}"]) from None
    cfg = parse_config(data, str(p))
    base = p.parent
    # Relative paths in the file are relative to the file, so a config can travel with its certificates.
    return _resolve_paths(cfg, base)


def _resolve_paths(cfg: Config, base: Path) -> Config:
    def fix(path: Path | None) -> Path | None:
        if path is None or path.is_absolute():
            return path
        return (base / path).resolve()

    tenants = []
    for t in cfg.tenants:
        cred = t.credential.model_copy(
            update={
                "certificate": fix(t.credential.certificate),
                "secret_file": fix(t.credential.secret_file),
            }
        )
        tenants.append(t.model_copy(update={"credential": cred, "ca_bundle": fix(t.ca_bundle)}))
    service = cfg.service.model_copy(update={"state_dir": fix(cfg.service.state_dir)})
    return cfg.model_copy(update={"tenants": tenants, "service": service})
