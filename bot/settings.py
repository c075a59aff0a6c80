"""Settings: environment variables (and `.env`) plus the `revops.toml` file.

Names are exactly those of SPEC §2. Anything invalid stops start-up with one
line that names the key and what is wrong (`SettingsError`).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from stripe import api_version as STRIPE_SDK_API_VERSION

from .durations import bounded, parse_duration
from .errors import SettingsError
from .sizes import parse_body_limits

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
_S, _M, _H, _D = timedelta(seconds=1), timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
# Durations of revops.toml within sane bounds (seconds allowed, so tests can use them): a zero or
# a ten-year cadence is a typo that would make the scheduler spin or never run.
Cadence = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(bounded(_S, 7 * _D))]
Clock = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(bounded(_S, 30 * _D))]
Delay = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(bounded(timedelta(0), 30 * _D))]

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./revops.db"


class EnvSettings(BaseSettings):
    """What comes from the environment; secrets are SecretStr and never printed."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    database_url: str = DEFAULT_DATABASE_URL
    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str = "https://slack.com/api/"
    stripe_secret_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None
    # The Stripe API version every call sends and events are read as: the pinned SDK's own by default.
    stripe_api_version: str = STRIPE_SDK_API_VERSION
    revops_config: str | None = None
    revops_admin_api_key: SecretStr | None = None
    revops_alerts_token: SecretStr | None = None
    revops_base_url: str | None = None
    revops_env: Literal["development", "staging", "production"] = "development"
    port: int = Field(default=8000, ge=1, le=65535)
    # Not in the public contract's table but documented in the README.
    revops_worker_in_serve: bool = False
    # Whether `revops serve` delivers queued posts (None: yes on SQLite, no on PostgreSQL, where
    # `revops worker` delivers); see `serve_delivers()`.
    revops_serve_delivers: bool | None = None
    # PostgreSQL connections each process keeps (`serve` opens them at start; past them 8 more
    # are opened and closed as needed): size it so every process's fits the server's max_connections.
    revops_db_pool_size: int = Field(default=32, ge=1, le=500)
    # SIGTERM/SIGINT: how long in-flight sends and the worker's tick may take before claims are released.
    revops_shutdown_grace: Duration = timedelta(seconds=10)
    revops_log_level: str = "INFO"
    revops_tick: Duration = timedelta(seconds=1)
    revops_post_interval: Duration = timedelta(seconds=1)  # per-channel pacing of posts to Slack
    # The HTTP server's limits (`revops serve` options of the same names; bot/web/guard.py).
    revops_header_timeout: Annotated[timedelta, BeforeValidator(parse_duration),
                                     AfterValidator(bounded(_S / 10, 10 * _M))] = timedelta(seconds=10)
    revops_body_timeout: Annotated[timedelta, BeforeValidator(parse_duration),
                                   AfterValidator(bounded(_S / 10, 10 * _M))] = timedelta(seconds=20)
    revops_keepalive_timeout: Annotated[timedelta, BeforeValidator(parse_duration),
                                        AfterValidator(bounded(_S / 10, 10 * _M))] = timedelta(seconds=5)
    revops_max_connections: int = Field(default=2048, ge=1, le=1_000_000)
    revops_body_limits: str = ""  # PATH=SIZE,… over the defaults, e.g. "/alerts=16KiB,*=8KiB"

    @field_validator("database_url")
    @classmethod
    def _known_driver(cls, value: str) -> str:
        if value.startswith("postgres://"):
            value = "postgresql://" + value[len("postgres://"):]
        if value.startswith("postgresql://"):
            value = "postgresql+asyncpg://" + value[len("postgresql://"):]
        if value.startswith("sqlite:///"):
            value = "sqlite+aiosqlite:///" + value[len("sqlite:///"):]
        if not (value.startswith("sqlite+aiosqlite://") or value.startswith("postgresql+asyncpg://")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value

    @field_validator("revops_body_limits")
    @classmethod
    def _body_limits(cls, value: str) -> str:
        parse_body_limits(value)
        return value

    @field_validator("stripe_api_version")
    @classmethod
    def _api_version_shape(cls, value: str) -> str:
        value = value.strip()
        date, _, _release = value.partition(".")
        parts = date.split("-")
        if len(parts) != 3 or not all(p.isdigit() for p in parts) or len(value) > 64:
            raise ValueError("must be a Stripe API version such as 2025-03-31.basil")
        return value

    @field_validator("slack_api_url")
    @classmethod
    def _trailing_slash(cls, value: str) -> str:
        return value if value.endswith("/") else value + "/"

    def secrets(self) -> dict[str, SecretStr | None]:
        """Every secret setting by its environment name (for set/missing reports and redaction)."""
        return {
            "SLACK_BOT_TOKEN": self.slack_bot_token,
            "SLACK_SIGNING_SECRET": self.slack_signing_secret,
            "SLACK_APP_TOKEN": self.slack_app_token,
            "STRIPE_SECRET_KEY": self.stripe_secret_key,
            "STRIPE_WEBHOOK_SECRET": self.stripe_webhook_secret,
            "REVOPS_ADMIN_API_KEY": self.revops_admin_api_key,
            "REVOPS_ALERTS_TOKEN": self.revops_alerts_token,
        }


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SlackSection(_Section):
    incident_channel: str | None = None
    alerts_channel: str | None = None
    # Admission of slash commands and clicks (bot/slack/admission.py): this many run at once; past
    # it one is acknowledged at once with "Working on it…" and waits its turn (answered on the
    # response_url); past `overload_limit` in hand (running and waiting) one is refused in words.
    queue_depth: int = Field(default=32, ge=1, le=10_000)
    overload_limit: int = Field(default=400, ge=1, le=100_000)

    @model_validator(mode="after")
    def _limit_past_depth(self) -> "SlackSection":
        if self.overload_limit < self.queue_depth:
            raise ValueError(f"overload_limit ({self.overload_limit}) must be at least queue_depth "
                             f"({self.queue_depth})")
        return self


class RolesSection(_Section):
    admin: list[str] = []
    approver: list[str] = []
    responder: list[str] = []


class CreditsSection(_Section):
    max_grant: int = Field(default=500, ge=1)
    daily_cap: int = Field(default=1000, ge=1)
    max_pending_per_requester: int = Field(default=2, ge=1, le=100)  # per account
    approval_ttl: Cadence = timedelta(minutes=30)
    # What a paid Checkout Session grants per unit (quantity multiplies): Price id, Product id or lookup key.
    packs: dict[str, Annotated[int, Field(ge=1)]] = {}


class StripeSection(_Section):
    accounts: list[str] = []  # connected accounts (acct_…) whose events the mirror takes; others are ignored

    @field_validator("accounts")
    @classmethod
    def _account_ids(cls, value: list[str]) -> list[str]:
        for account in value:
            if not account.startswith("acct_"):
                raise ValueError(f"expected acct_… ids, got {account[:40]!r}")
        return value


class SeverityClock(_Section):
    ack: Clock
    resolve: Clock
    revenue_update: Cadence | None = None
    engineering_update: Cadence | None = None


def _default_severities() -> dict[str, SeverityClock]:
    h = timedelta(hours=1)
    return {
        "P1": SeverityClock(ack=timedelta(minutes=15), resolve=h, revenue_update=timedelta(minutes=30), engineering_update=h),
        "P2": SeverityClock(ack=h, resolve=4 * h, revenue_update=h, engineering_update=2 * h),
        "P3": SeverityClock(ack=4 * h, resolve=24 * h),
    }


class EscalationLevel(_Section):
    after: Delay
    notify: list[str] = []


class HealthSection(_Section):
    probe_every: Cadence = timedelta(minutes=1)


class AlertsSection(_Section):
    # The same stage + metric inside it updates the open alert's card instead of posting a new one.
    dedupe_window: Delay = timedelta(minutes=10)


def parse_optional_delay(value: object) -> timedelta | None:
    """A duration, or `"off"` / `false` / `""` for none (`[incidents] archive_after`)."""
    if value is None or value is False or (isinstance(value, str) and value.strip().lower() in ("", "off", "never")):
        return None
    return parse_duration(value)


class IncidentsSection(_Section):
    # A reaction with this emoji (its Slack name, colons optional) on a message in a channel with an
    # open incident puts that message on the incident's timeline (bot/incidents/pins.py).
    pin_emoji: str = "pushpin"
    # Every declared incident gets its own channel #inc-<number>-<stage> (`--channel new` asks for one).
    channel_per_incident: bool = False
    # How long after the resolve an incident's own channel is archived; None ("off"): never.
    archive_after: Annotated[timedelta | None, BeforeValidator(parse_optional_delay),
                             AfterValidator(bounded(timedelta(0), 30 * _D))] = None

    @field_validator("pin_emoji")
    @classmethod
    def _emoji_name(cls, value: str) -> str:
        name = value.strip().strip(":")
        if not re.fullmatch(r"[a-z0-9_+'-]{1,100}", name):
            raise ValueError(f"expected an emoji's Slack name such as \"pushpin\", got {value[:40]!r}")
        return name


class ExportsSection(_Section):
    # `export …` CSVs: false leaves the email column present but blank (and blanks emails in free text).
    include_email: bool = False


class Invariant(_Section):
    """A finance lineage invariant (`[[invariants]]`): checked on every applied Stripe event of
    its types. `field` is a dotted path into the event's object (`metadata.provider_fee_pct`),
    or into the event itself when it starts with `data.` (`data.object.amount_total`); exactly
    one rule: `equals`, `between = [low, high]`, `present = true`, or `ratio_of` another path
    with a `factor` (markup = factor × cost); `tolerance` is the allowed absolute difference."""

    name: str = Field(min_length=1, max_length=100)
    events: list[str] = Field(min_length=1)
    field: str = Field(min_length=1, max_length=200)
    equals: float | str | bool | None = None
    between: tuple[float, float] | None = None
    present: bool | None = None
    ratio_of: str | None = None
    factor: float | None = None
    tolerance: float = Field(default=0, ge=0)

    @field_validator("field", "ratio_of")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is not None and not all(part.strip() for part in value.split(".")):
            raise ValueError(f"expected a dotted path such as metadata.provider_fee_pct, got {value[:60]!r}")
        return value

    @field_validator("between")
    @classmethod
    def _ordered(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError("expected [low, high] with low <= high")
        return value

    @model_validator(mode="after")
    def _one_rule(self) -> "Invariant":
        rules = [name for name in ("equals", "between", "present", "ratio_of") if getattr(self, name) is not None]
        if len(rules) != 1:
            raise ValueError(f"invariant {self.name!r}: expected exactly one rule of equals, between, present, "
                             f"ratio_of (found {', '.join(rules) or 'none'})")
        if (self.ratio_of is None) != (self.factor is None):
            raise ValueError(f"invariant {self.name!r}: ratio_of and factor go together")
        return self

    @property
    def rule(self) -> str:
        return next(name for name in ("equals", "between", "present", "ratio_of") if getattr(self, name) is not None)


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class WeeklyAt:
    """A time of the week in UTC (`[reconcile] weekly = "mon 09:00"`)."""

    weekday: int  # 0 = Monday
    hour: int
    minute: int

    def __str__(self) -> str:
        return f"{WEEKDAYS[self.weekday]} {self.hour:02d}:{self.minute:02d}"

    def next_after(self, when: datetime) -> datetime:
        """The first such moment strictly after `when` (an aware datetime; the answer is UTC)."""
        when = when.astimezone(timezone.utc)
        day = when.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)
        slot = day + timedelta(days=(self.weekday - day.weekday()) % 7)
        return slot if slot > when else slot + timedelta(days=7)


_WEEKLY = re.compile(r"(mon|tue|wed|thu|fri|sat|sun)\s+([01][0-9]|2[0-3]):([0-5][0-9])")


def parse_weekly(value: object) -> WeeklyAt | None:
    """`"mon 09:00"` (UTC; day names mon…sun), or `"off"` / `false` / `""` for no weekly post."""
    if isinstance(value, WeeklyAt) or value is None:
        return value
    if value is False or (isinstance(value, str) and value.strip().lower() in ("", "off", "none", "never")):
        return None
    match = _WEEKLY.fullmatch(value.strip().lower()) if isinstance(value, str) else None
    if match is None:
        shown = repr(value)[:40]
        raise ValueError(f'expected "ddd HH:MM" in UTC such as "mon 09:00" (mon…sun, 24-hour clock), '
                         f'or "off"; got {shown}')
    return WeeklyAt(WEEKDAYS.index(match.group(1)), int(match.group(2)), int(match.group(3)))


class ReconcileSection(_Section):
    # The weekly credit-usage and revenue reconciliation post (UTC); None: no weekly post.
    weekly: Annotated[WeeklyAt | None, BeforeValidator(parse_weekly)] = WeeklyAt(0, 9, 0)
    # Flag an account whose credit use this week is more than this many times last week's.
    usage_jump: float = Field(default=3, gt=1, le=1000)


class ServiceCheck(_Section):
    name: str
    env: str = "production"
    url: str
    timeout: Annotated[timedelta, BeforeValidator(parse_duration),
                       AfterValidator(bounded(None, timedelta(seconds=60)))] = timedelta(seconds=2)
    p95_slo: Annotated[timedelta, BeforeValidator(parse_duration),
                       AfterValidator(bounded(None, timedelta(seconds=60)))] = timedelta(milliseconds=150)


class FileConfig(_Section):
    """The `revops.toml` file (SPEC §2)."""

    templates_dir: str | None = None
    slack: SlackSection = SlackSection()
    roles: RolesSection = RolesSection()
    credits: CreditsSection = CreditsSection()
    stripe: StripeSection = StripeSection()
    severity: dict[Literal["P1", "P2", "P3"], SeverityClock] = Field(default_factory=_default_severities)
    escalation: dict[str, EscalationLevel] = {}
    health: HealthSection = HealthSection()
    alerts: AlertsSection = AlertsSection()
    exports: ExportsSection = ExportsSection()
    incidents: IncidentsSection = IncidentsSection()
    reconcile: ReconcileSection = ReconcileSection()
    services: list[ServiceCheck] = []
    invariants: list[Invariant] = []  # finance lineage (bot/billing/lineage.py)

    @field_validator("invariants")
    @classmethod
    def _unique_names(cls, value: list[Invariant]) -> list[Invariant]:
        names = [invariant.name for invariant in value]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"invariant names must differ: {', '.join(twice)} appears twice")
        return value

    @field_validator("severity")
    @classmethod
    def _fill_missing_severities(cls, value: dict) -> dict:
        return {**_default_severities(), **value}


@dataclass(frozen=True)
class Settings:
    env: EnvSettings
    cfg: FileConfig
    config_path: Path | None = None

    @property
    def production(self) -> bool:
        return self.env.revops_env == "production"

    @property
    def serve_delivers(self) -> bool:
        """Whether `revops serve` delivers posts: REVOPS_SERVE_DELIVERS, else yes on SQLite (one
        process) and no on PostgreSQL (the `worker` processes deliver)."""
        if self.env.revops_serve_delivers is not None:
            return self.env.revops_serve_delivers
        return self.env.database_url.startswith("sqlite")


def _first_error(exc: ValidationError, prefix: str) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "(file)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return f"{prefix}{key}: {msg}"


def load_file_config(path: Path) -> FileConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"REVOPS_CONFIG: {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path.name}: not valid TOML ({exc})") from None
    try:
        return FileConfig.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(_first_error(exc, f"{path.name}: ")) from None


def load_settings(**overrides) -> Settings:
    """Read the environment and the TOML file; raise SettingsError with one clear line."""
    try:
        env = EnvSettings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]).upper() if err["loc"] else "environment"
        msg = err["msg"].removeprefix("Value error, ")
        # Never echo the input value: it may be a secret.
        raise SettingsError(f"{name}: {msg}") from None
    path: Path | None
    if env.revops_config:
        path = Path(env.revops_config)
    else:
        path = Path("revops.toml") if Path("revops.toml").exists() else None
    cfg = load_file_config(path) if path else FileConfig()
    return Settings(env=env, cfg=cfg, config_path=path)


def example_config_path() -> Path:
    return Path(__file__).resolve().parent / "revops.example.toml"


def environ_has_config() -> bool:
    return bool(os.environ.get("REVOPS_CONFIG")) or Path("revops.toml").exists()
