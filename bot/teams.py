"""The teams file: teams, their champions and schedules, and the AWS accounts to scan."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bot.errors import ConfigError

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
SLACK_USER_ID = re.compile(r"[UW][A-Z0-9]{2,}")
SLACK_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]{2,}")
ACCOUNT_ID = re.compile(r"[0-9]{12}")
Source = Literal["cloudtrail", "access_advisor", "access_analyzer", "last_used"]


def channel_id(value: str) -> str:
    """Return value if it is a Slack channel id, else raise a ValueError naming it."""
    if not SLACK_CHANNEL_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a Slack channel id (like C0123ABCD)")
    return value


def user_ids(value: tuple[str, ...]) -> tuple[str, ...]:
    """Return value if every entry is a Slack user id, else raise a ValueError naming one."""
    for user in value:
        if not SLACK_USER_ID.fullmatch(user):
            raise ValueError(f"{user!r} is not a Slack user id (like U0123ABCD)")
    return value


def account_id(value: object) -> str:
    """Return a 12-digit account id, refusing numbers YAML may have misread."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{value!r} is not a 12-digit AWS account id")
    if isinstance(value, int):
        # YAML reads an unquoted 012345678901 as octal and 1:2:3 as base 60: only a number
        # that still has 12 digits can be what was written.
        if len(str(value)) != 12:
            raise ValueError(
                f"{value} is not a 12-digit AWS account id; write account ids in quotes"
            )
        return str(value)
    if not ACCOUNT_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a 12-digit AWS account id")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CloudTrailSource(_Strict):
    """Where an account's CloudTrail log files are delivered."""

    bucket: str
    prefix: str = ""
    # Data events (S3 object reads, Lambda invokes) count as evidence only when logged.
    data_events: bool = False
    region: str | None = None


class Account(_Strict):
    """One AWS account Pare reads, and how."""

    id: str
    name: str = ""
    role_arn: str | None = None
    external_id: str | None = None
    region: str = "us-east-1"
    sources: tuple[Source, ...] = ("last_used", "cloudtrail")
    cloudtrail: CloudTrailSource | None = None
    apply: bool = False

    @field_validator("id", mode="before")
    @classmethod
    def _account_id(cls, value: object) -> str:
        return account_id(value)

    @model_validator(mode="after")
    def _trail_needs_bucket(self) -> Account:
        if "cloudtrail" in self.sources and self.cloudtrail is None:
            raise ValueError("sources lists cloudtrail but no cloudtrail bucket is given")
        if self.role_arn and f":{self.id}:" not in self.role_arn:
            raise ValueError(f"role_arn {self.role_arn!r} is not a role in account {self.id}")
        return self

    @property
    def label(self) -> str:
        """Return the account's name with its id, for messages."""
        return f"{self.name} ({self.id})" if self.name else self.id


class Organization(_Strict):
    """Accounts found through AWS Organizations, each read through the same role name."""

    role_name: str = Field(min_length=1, max_length=64)
    external_id: str | None = None
    # Role in the management (or delegated administrator) account for the Organizations API;
    # without it the default credentials must already be there.
    management_role_arn: str | None = None
    region: str = "us-east-1"
    sources: tuple[Source, ...] = ("last_used", "access_analyzer")
    cloudtrail: CloudTrailSource | None = None
    # Only accounts under these organisational units (at any depth), if any are given.
    ous: tuple[str, ...] = ()
    # Only accounts carrying every one of these tags, if any are given.
    tags: dict[str, str] = Field(default_factory=dict)
    exclude: tuple[str, ...] = ()
    # The delegated administrator holding an organisation unused-access analyzer: read once a
    # scan, it speaks for every member account that has no analyzer of its own.
    analyzer_account: str | None = None
    # Role to assume there; by default the member role name in that account.
    analyzer_role_arn: str | None = None
    # The analyzer to read; by default the only active organisation unused-access analyzer.
    analyzer_arn: str | None = None

    @field_validator("exclude", mode="before")
    @classmethod
    def _exclude(cls, value: object) -> object:
        if isinstance(value, list):
            return [account_id(v) for v in value]
        return value

    @field_validator("analyzer_account", mode="before")
    @classmethod
    def _analyzer_account(cls, value: object) -> object:
        return None if value is None else account_id(value)

    @model_validator(mode="after")
    def _trail_needs_bucket(self) -> Organization:
        if "cloudtrail" in self.sources and self.cloudtrail is None:
            raise ValueError("sources lists cloudtrail but no cloudtrail bucket is given")
        owner = self.analyzer_account
        for name in ("analyzer_role_arn", "analyzer_arn"):
            value = getattr(self, name)
            if value and not owner:
                raise ValueError(f"{name} is given but analyzer_account is not")
            if value and f":{owner}:" not in value:
                raise ValueError(f"{name} {value!r} is not in account {owner}")
        return self

    def analyzer_admin(self) -> Account | None:
        """Return how to reach the delegated administrator's analyzer, if one is configured."""
        if not self.analyzer_account:
            return None
        # An analyzer is regional: the one named is read in its own region.
        region = self.analyzer_arn.split(":")[3] if self.analyzer_arn else self.region
        return Account(
            id=self.analyzer_account,
            name="organisation analyzer",
            role_arn=self.analyzer_role_arn
            or f"arn:aws:iam::{self.analyzer_account}:role/{self.role_name}",
            external_id=self.external_id,
            region=region,
            sources=("access_analyzer",),
        )

    def account(self, account_id: str, name: str) -> Account:
        """Return the account spec of a member account found in the organisation."""
        return Account(
            id=account_id,
            name=name,
            role_arn=f"arn:aws:iam::{account_id}:role/{self.role_name}",
            external_id=self.external_id,
            region=self.region,
            sources=self.sources,
            cloudtrail=self.cloudtrail,
        )


class Match(_Strict):
    """How principals map to a team: any one rule that matches assigns it."""

    tags: dict[str, str] = Field(default_factory=dict)
    accounts: tuple[str, ...] = ()
    names: tuple[str, ...] = ()

    @field_validator("accounts", mode="before")
    @classmethod
    def _accounts(cls, value: object) -> object:
        if isinstance(value, list):
            return [account_id(v) for v in value]
        return value


class Digest(_Strict):
    """When a team's digest is posted, in the team's own time zone."""

    day: str = "monday"
    hour: int = Field(default=9, ge=0, le=23)

    @field_validator("day")
    @classmethod
    def _day(cls, value: str) -> str:
        day = value.strip().lower()
        if day not in DAYS and day != "daily":
            raise ValueError(f"{value!r} is not a weekday name or 'daily'")
        return day


class Team(_Strict):
    """One team: its channel, champions, time zone and digest schedule."""

    name: str = Field(min_length=1, max_length=80)
    channel: str
    champions: tuple[str, ...] = Field(min_length=1)
    timezone: str = "UTC"
    digest: Digest = Field(default_factory=Digest)
    match: Match = Field(default_factory=Match)

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        return channel_id(value)

    @field_validator("champions")
    @classmethod
    def _champions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return user_ids(value)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not a known time zone") from None
        return value

    @property
    def tz(self) -> ZoneInfo:
        """Return the team's time zone."""
        return ZoneInfo(self.timezone)


class Exclusions(_Strict):
    """AWS-owned and operator-chosen principals that never reach a digest."""

    role_names: tuple[str, ...] = (
        "AWSControlTowerExecution",
        "AWSCloudFormationStackSetExecutionRole",
        "stacksets-exec-*",
        "OrganizationAccountAccessRole",
    )
    allow_list: tuple[str, ...] = ()
    exempt_tag: str = "pare:exempt"


class Escalation(_Strict):
    """Where teams are escalated when findings wait too long or champions have left."""

    channel: str
    after_days: int = Field(default=14, ge=1, le=365)

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        return channel_id(value)


class TeamsConfig(_Strict):
    """The whole teams file."""

    accounts: tuple[Account, ...] = ()
    organization: Organization | None = None
    teams: tuple[Team, ...] = ()
    admins: tuple[str, ...] = ()
    fallback_team: str | None = None
    leaderboard_channel: str | None = None
    escalation: Escalation | None = None
    exclusions: Exclusions = Field(default_factory=Exclusions)

    @field_validator("admins")
    @classmethod
    def _admins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return user_ids(value)

    @field_validator("leaderboard_channel")
    @classmethod
    def _leaderboard_channel(cls, value: str | None) -> str | None:
        return None if value is None else channel_id(value)

    @model_validator(mode="after")
    def _consistent(self) -> TeamsConfig:
        if not self.teams:
            raise ValueError("lists no teams; add at least one under 'teams'")
        names = [t.name for t in self.teams]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ValueError(f"team names must be unique; repeated: {sorted(dupes)}")
        ids = [a.id for a in self.accounts]
        if len(set(ids)) != len(ids):
            raise ValueError("account ids must be unique")
        if self.fallback_team and self.fallback_team not in names:
            raise ValueError(f"fallback_team {self.fallback_team!r} is not one of the teams")
        return self

    def team(self, name: str) -> Team:
        """Return the team called name, or raise UnknownTeam."""
        from bot.errors import UnknownTeam

        for team in self.teams:
            if team.name == name:
                return team
        raise UnknownTeam(name)

    def account(self, account_id: str) -> Account | None:
        """Return the configured account with this id, if any."""
        return next((a for a in self.accounts if a.id == account_id), None)

    def owner_of(self, account_id: str, name: str, tags: dict[str, str]) -> str | None:
        """Return the team a principal belongs to: tag first, then account, then name."""
        for team in self.teams:
            rules = team.match.tags
            if rules and all(tags.get(k) == v for k, v in rules.items()):
                return team.name
        for team in self.teams:
            if account_id in team.match.accounts:
                return team.name
        for team in self.teams:
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in team.match.names):
                return team.name
        return self.fallback_team


def _field_path(loc: tuple[object, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "(top level)"


class DuplicateKey(ValueError):
    """A mapping names the same key twice; the later one would silently win."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping."""

    def construct_mapping(  # type: ignore[override]
        self, node: yaml.MappingNode, deep: bool = False
    ) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise DuplicateKey(f"the key {key!r} appears twice (line {line})")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    keys = [k for k, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise DuplicateKey(f"the key {key!r} appears twice")
    return dict(pairs)


def parse_teams(text: str, source: str, fmt: str) -> TeamsConfig:
    """Parse teams-file text; errors name the source and the field."""
    try:
        if fmt == "toml":
            raw = tomllib.loads(text)
        elif fmt == "json":
            raw = json.loads(text, object_pairs_hook=_unique_pairs)
        else:
            raw = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a safe loader)
    except DuplicateKey as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except (yaml.YAMLError, tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{source}: not valid {fmt.upper()}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to be a teams file") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with 'teams' and 'accounts'")
    try:
        return TeamsConfig.model_validate(raw)
    except ValidationError as exc:
        problems = [
            f"{_field_path(e['loc'])}: {_plain(e['type'], e['msg'])}" for e in exc.errors()[:5]
        ]
        more = f"\n  (and {exc.error_count() - 5} more)" if exc.error_count() > 5 else ""
        if len(problems) == 1:
            raise ConfigError(f"{source}: {problems[0]}") from None
        listed = "".join(f"\n  {p}" for p in problems)
        raise ConfigError(f"{source}: {exc.error_count()} problems:{listed}{more}") from None


# Pydantic's wording, said the way an operator editing the file would put it.
PLAIN = {
    "missing": "is required",
    "extra_forbidden": "is not a known setting (check the spelling)",
    "too_short": "must list at least one",
    "tuple_type": "must be a list",
    "dict_type": "must be a mapping",
    "string_type": "must be text",
    "int_parsing": "must be a whole number",
    "bool_parsing": "must be true or false",
    "literal_error": None,
}


def _plain(kind: str, message: str) -> str:
    return PLAIN.get(kind) or message.removeprefix("Value error, ")


def load_teams(path: Path) -> TeamsConfig:
    """Read and validate the teams file (YAML, TOML or JSON by its suffix)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: teams file not found (set PARE_TEAMS_FILE)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a teams file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the teams file: {exc.strerror}") from None
    suffix = path.suffix.lower()
    fmt = "toml" if suffix == ".toml" else "json" if suffix == ".json" else "yaml"
    return parse_teams(text, str(path), fmt)
