"""CloudTrail log files as evidence: who called what, and over which time the logs speak.

Log files come as S3 delivers them (`{"Records": [...]}`, gzipped or not) or as a bare JSON list
of records. A file that cannot be parsed is skipped and reported; because it may hold anyone's
calls, every piece of evidence from the same logs carries that problem, so the analysis fails
closed instead of calling something unused that the lost file might have shown in use.
"""

from __future__ import annotations

import gzip
import json
import logging
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bot.domain import UsageEvidence
from bot.evidence.actions import map_event

log = logging.getLogger(__name__)

SOURCE = "cloudtrail"
GZIP_MAGIC = b"\x1f\x8b"
# Callers that are AWS itself, or the account as a whole, are nobody's grant.
IGNORED_CALLERS = frozenset({"AWSService", "AWSAccount", "Root", "IdentityCenterUser"})
# Service events and sign-ins are not calls authorised by the caller's IAM policies.
API_EVENT_TYPES = frozenset({"AwsApiCall", "AwsConsoleAction"})

# A principal's identity as CloudTrail and IAM can both name it: (kind, account, name).
Identity = tuple[str, str, str]


class BrokenLogFile(ValueError):
    """A log file that is not CloudTrail JSON."""


def parse_log_bytes(data: bytes) -> list[dict[str, Any]]:
    """Return the records of one log file; raise BrokenLogFile if it cannot be read."""
    try:
        if data[:2] == GZIP_MAGIC:
            data = gzip.decompress(data)
        doc = json.loads(data)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BrokenLogFile(type(exc).__name__) from None
    if isinstance(doc, dict) and isinstance(doc.get("Records"), list):
        records = doc["Records"]
    elif isinstance(doc, list):
        records = doc
    else:
        raise BrokenLogFile("no Records list")
    return [r for r in records if isinstance(r, dict)]


def identity_of_arn(arn: str) -> Identity | None:
    """Return (kind, account, name) for an IAM role or user ARN, or an assumed-role ARN."""
    parts = arn.split(":", 5)
    if len(parts) != 6 or parts[0] != "arn":
        return None
    service, account, resource = parts[2], parts[4], parts[5]
    kind, _, rest = resource.partition("/")
    if service == "iam" and kind in ("role", "user") and rest:
        # Paths are left out: a session issuer and the role itself always agree on the name.
        return (kind, account, rest.rsplit("/", 1)[-1])
    if service == "sts" and kind == "assumed-role" and rest:
        return ("role", account, rest.split("/", 1)[0])
    return None


def caller_of(record: dict[str, Any]) -> Identity | None:
    """Return the IAM role or user whose permissions a record's call used, if any."""
    who = record.get("userIdentity")
    if not isinstance(who, dict):
        return None
    kind = who.get("type")
    if kind in IGNORED_CALLERS or kind is None:
        return None
    if kind == "IAMUser":
        return identity_of_arn(str(who.get("arn", "")))
    issuer = (who.get("sessionContext") or {}).get("sessionIssuer") or {}
    if isinstance(issuer, dict) and issuer.get("arn"):
        # An assumed role's session and a federated user's session both spend the grants of
        # the role or user that issued them.
        return identity_of_arn(str(issuer["arn"]))
    if kind == "AssumedRole":
        return identity_of_arn(str(who.get("arn", "")))
    return None


def event_time(record: dict[str, Any]) -> datetime | None:
    """Return a record's eventTime in UTC, or None if it has none."""
    text = record.get("eventTime")
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass
class _Usage:
    services: dict[str, datetime] = field(default_factory=dict)
    actions: dict[str, datetime] = field(default_factory=dict)
    gaps: set[str] = field(default_factory=set)


def _later(seen: dict[str, datetime], key: str, moment: datetime) -> None:
    if key not in seen or seen[key] < moment:
        seen[key] = moment


@dataclass
class TrailReadout:
    """Everything read from one set of CloudTrail logs, attributed to principals."""

    data_events: bool = False
    files_read: int = 0
    records: int = 0
    attributed: int = 0
    broken_files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    covered_from: datetime | None = None
    covered_to: datetime | None = None
    usage: dict[Identity, _Usage] = field(default_factory=dict)

    def add_file(self, name: str, data: bytes) -> None:
        """Parse one log file and add its records; a broken file is recorded, not raised."""
        try:
            records = parse_log_bytes(data)
        except BrokenLogFile as exc:
            self.broken_files.append(name)
            self.problems.append(f"CloudTrail log file {name} could not be read ({exc})")
            log.warning("skipped broken CloudTrail log file %s: %s", name, exc)
            return
        self.files_read += 1
        self.add_records(records)

    def add_records(self, records: Iterable[dict[str, Any]]) -> None:
        """Add parsed records: widen the covered time and note each caller's use."""
        for record in records:
            moment = event_time(record)
            if moment is None:
                continue
            self.records += 1
            if self.covered_from is None or moment < self.covered_from:
                self.covered_from = moment
            if self.covered_to is None or moment > self.covered_to:
                self.covered_to = moment
            if record.get("eventType", "AwsApiCall") not in API_EVENT_TYPES:
                continue
            caller = caller_of(record)
            source, name = record.get("eventSource"), record.get("eventName")
            if caller is None or not isinstance(source, str) or not isinstance(name, str):
                continue
            mapped = map_event(source, name)
            if not mapped.permission:
                continue
            # A denied call still shows the workload needs the action, so it counts as use:
            # keeping a grant is always the safe side.
            self.attributed += 1
            usage = self.usage.setdefault(caller, _Usage())
            _later(usage.services, mapped.prefix, moment)
            for action in mapped.actions:
                _later(usage.actions, action, moment)
            if not mapped.actions:
                # An event that maps to no known action may stand for any action of its
                # service, so the service is judged only as a whole.
                usage.gaps.add(mapped.prefix)

    def _evidence(self, usage: _Usage | None, read_at: datetime) -> UsageEvidence:
        return UsageEvidence(
            source=SOURCE,
            covered_from=self.covered_from,
            covered_to=self.covered_to,
            read_at=read_at,
            services=dict(usage.services) if usage else {},
            actions=dict(usage.actions) if usage else {},
            action_gaps=set(usage.gaps) if usage else set(),
            action_level=True,
            data_events=self.data_events,
            problems=list(self.problems),
        )

    def evidence_for(
        self, arns: Iterable[str], read_at: datetime | None = None
    ) -> dict[str, list[UsageEvidence]]:
        """Return evidence per principal ARN, empty usage included where the logs cover it.

        A principal that made no call in the covered time gets evidence with no use, which is
        what proves it unused. Logs that cover no time at all prove nothing: then only the
        problems (if any) are passed on, so nobody is judged on them.
        """
        read_at = read_at or datetime.now(UTC)
        out: dict[str, list[UsageEvidence]] = {}
        for arn in arns:
            identity = identity_of_arn(arn)
            usage = self.usage.get(identity) if identity else None
            if self.covered_from is None and not self.problems:
                out[arn] = []
                continue
            out[arn] = [self._evidence(usage, read_at)]
        return out

    def summary(self) -> str:
        """Return one line on what was read, for reports."""
        broken = f", {len(self.broken_files)} broken skipped" if self.broken_files else ""
        return (
            f"{self.files_read} CloudTrail files, {self.records} records, "
            f"{len(self.usage)} callers{broken}"
        )


def _log_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and (p.name.endswith(".json") or p.name.endswith(".json.gz"))
    )


def read_log_folder(folder: Path, *, data_events: bool = False) -> TrailReadout:
    """Read every CloudTrail log file under a local folder (for `pare analyze --cloudtrail`)."""
    readout = TrailReadout(data_events=data_events)
    if not folder.is_dir():
        readout.problems.append(f"CloudTrail folder {folder} does not exist")
        return readout
    for path in _log_files(folder):
        readout.add_file(str(path.relative_to(folder)), path.read_bytes())
    log.info("read CloudTrail folder: %s", readout.summary())
    return readout
