"""CloudTrail log files as evidence: who called what, and over which time the logs speak.

Log files come as S3 delivers them (`{"Records": [...]}`, gzipped or not) or as a bare JSON list
of records. A file that cannot be parsed is skipped and reported; because it may hold anyone's
calls, every piece of evidence from the same logs carries that problem, so the analysis fails
closed instead of calling something unused that the lost file might have shown in use. A record
that cannot be read (no readable time, an identity of the wrong shape) is a lost call in the
same way, and fails the evidence closed too.

The logs vouch only for days they hold records of: the covered time is the unbroken run of
days with records that ends at the newest one, so a missing day (a trail switched off, files
lost or never copied) ends the coverage instead of counting as a quiet day.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import zlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
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

# CloudTrail delivers files of a few MB at most; a file that inflates far beyond that is not a
# log file but a decompression bomb, and reading it whole would exhaust the scanner's memory.
MAX_FILE_BYTES = 256 * 1024 * 1024

ONE_DAY = timedelta(days=1)

# A principal's identity as CloudTrail and IAM can both name it: (kind, account, name).
Identity = tuple[str, str, str]


class BrokenLogFile(ValueError):
    """A log file that is not CloudTrail JSON."""


class MalformedRecord(ValueError):
    """A record whose fields do not have CloudTrail's shapes; the message says which."""


def _inflate(data: bytes) -> bytes:
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        out = stream.read(MAX_FILE_BYTES + 1)
    if len(out) > MAX_FILE_BYTES:
        raise BrokenLogFile(f"larger than {MAX_FILE_BYTES:,} bytes uncompressed")
    return out


def parse_log_bytes(data: bytes) -> list[Any]:
    """Return the records of one log file; raise BrokenLogFile if it cannot be read.

    Entries that are not objects are returned as they are, so the reader can count them.
    """
    if len(data) > MAX_FILE_BYTES:
        raise BrokenLogFile(f"larger than {MAX_FILE_BYTES:,} bytes")
    try:
        if data[:2] == GZIP_MAGIC:
            data = _inflate(data)
        doc = json.loads(data)
    except (
        OSError,
        EOFError,
        zlib.error,
        UnicodeDecodeError,
        json.JSONDecodeError,
        RecursionError,
    ) as exc:
        raise BrokenLogFile(type(exc).__name__) from None
    if isinstance(doc, dict) and isinstance(doc.get("Records"), list):
        return list(doc["Records"])
    if isinstance(doc, list):
        return doc
    raise BrokenLogFile("no Records list")


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


def _field(holder: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = holder.get(name)
    if value is not None and not isinstance(value, kind):
        raise MalformedRecord(f"{where}{name} is not a {kind.__name__}")
    return value


def caller_of(record: dict[str, Any]) -> Identity | None:
    """Return the IAM role or user whose permissions a record's call used, if any.

    Raise MalformedRecord when the identity has the wrong shape: it may be anyone's call.
    """
    who = _field(record, "userIdentity", dict, "")
    if who is None:
        return None
    kind = _field(who, "type", str, "userIdentity.")
    if kind in IGNORED_CALLERS or kind is None:
        return None
    arn = _field(who, "arn", str, "userIdentity.") or ""
    if kind == "IAMUser":
        return identity_of_arn(arn)
    context = _field(who, "sessionContext", dict, "userIdentity.") or {}
    issuer = _field(context, "sessionIssuer", dict, "userIdentity.sessionContext.") or {}
    issuer_arn = _field(issuer, "arn", str, "userIdentity.sessionContext.sessionIssuer.")
    if issuer_arn:
        # An assumed role's session and a federated user's session both spend the grants of
        # the role or user that issued them.
        return identity_of_arn(issuer_arn)
    if kind == "AssumedRole":
        return identity_of_arn(arn)
    return None


def event_time(record: dict[str, Any]) -> datetime | None:
    """Return a record's eventTime in UTC, or None if it has none."""
    text = record.get("eventTime")
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


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
    # Records that could not be read, counted by why: reported once each, not per record.
    skipped: Counter[str] = field(default_factory=Counter)
    # The earliest record of every UTC day that has any: the days the logs can vouch for.
    days: dict[date, datetime] = field(default_factory=dict)
    newest: datetime | None = None
    usage: dict[Identity, _Usage] = field(default_factory=dict)

    def add_broken(self, name: str, why: str) -> None:
        """Record a log file that could not be read."""
        self.broken_files.append(name)
        self.problems.append(f"CloudTrail log file {name} could not be read ({why})")
        log.warning("skipped broken CloudTrail log file %s: %s", name, why)

    def add_file(self, name: str, data: bytes) -> None:
        """Parse one log file and add its records; a broken file is recorded, not raised."""
        try:
            records = parse_log_bytes(data)
        except BrokenLogFile as exc:
            self.add_broken(name, str(exc))
            return
        self.files_read += 1
        self.add_records(records)

    def add_records(self, records: Iterable[Any]) -> None:
        """Add parsed records: note the days they cover and each caller's use."""
        for record in records:
            try:
                self._add(record)
            except MalformedRecord as exc:
                self.skipped[str(exc)] += 1

    def _add(self, record: Any) -> None:
        if not isinstance(record, dict):
            raise MalformedRecord("not a JSON object")
        moment = event_time(record)
        if moment is None:
            raise MalformedRecord("no readable eventTime")
        event_type = _field(record, "eventType", str, "") or "AwsApiCall"
        caller = caller_of(record)
        source, name = record.get("eventSource"), record.get("eventName")
        if caller is not None and not (isinstance(source, str) and isinstance(name, str)):
            raise MalformedRecord("a call with no eventSource or eventName")

        self.records += 1
        day = moment.date()
        if day not in self.days or moment < self.days[day]:
            self.days[day] = moment
        if self.newest is None or moment > self.newest:
            self.newest = moment
        if event_type not in API_EVENT_TYPES or caller is None:
            return
        mapped = map_event(source, name)
        if not mapped.permission:
            return
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

    def _first_day(self) -> date | None:
        if self.newest is None:
            return None
        day = self.newest.date()
        while day > date.min and day - ONE_DAY in self.days:
            day -= ONE_DAY
        return day

    @property
    def covered_to(self) -> datetime | None:
        """Return the newest record's time."""
        return self.newest

    @property
    def covered_from(self) -> datetime | None:
        """Return the start of the unbroken run of days with records that ends at the newest."""
        first = self._first_day()
        return self.days[first] if first else None

    def gap(self) -> tuple[date, date] | None:
        """Return the first and last day of the gap just before the covered run, if any."""
        first = self._first_day()
        if first is None:
            return None
        earlier = max((d for d in self.days if d < first), default=None)
        return (earlier + ONE_DAY, first - ONE_DAY) if earlier is not None else None

    def coverage_note(self) -> str | None:
        """Say where the covered time starts and why, for the reason of an unknown."""
        first, gap = self._first_day(), self.gap()
        if gap is not None:
            return f"no CloudTrail records from {gap[0]} to {gap[1]}"
        return f"CloudTrail records start on {first}" if first else None

    def all_problems(self) -> list[str]:
        """Return every problem: broken files, unlistable buckets and unreadable records."""
        skipped = [
            f"{count} CloudTrail record{'s' if count > 1 else ''} could not be read ({why})"
            for why, count in sorted(self.skipped.items())
        ]
        return self.problems + skipped

    def evidence_for(
        self, arns: Iterable[str], read_at: datetime | None = None
    ) -> dict[str, list[UsageEvidence]]:
        """Return evidence per principal ARN, empty usage included where the logs cover it.

        A principal that made no call in the covered time gets evidence with no use, which is
        what proves it unused. Logs that cover no time at all prove nothing: then only the
        problems (if any) are passed on, so nobody is judged on them.
        """
        read_at = read_at or datetime.now(UTC)
        problems = self.all_problems()
        covered_from, note = self.covered_from, self.coverage_note()
        out: dict[str, list[UsageEvidence]] = {}
        for arn in arns:
            if covered_from is None and not problems:
                out[arn] = []
                continue
            identity = identity_of_arn(arn)
            usage = self.usage.get(identity) if identity else None
            out[arn] = [
                UsageEvidence(
                    source=SOURCE,
                    covered_from=covered_from,
                    covered_to=self.newest,
                    read_at=read_at,
                    services=dict(usage.services) if usage else {},
                    actions=dict(usage.actions) if usage else {},
                    action_gaps=set(usage.gaps) if usage else set(),
                    action_level=True,
                    data_events=self.data_events,
                    problems=list(problems),
                    coverage_note=note,
                )
            ]
        return out

    def summary(self) -> str:
        """Return one line on what was read, for reports."""
        broken = f", {len(self.broken_files)} broken skipped" if self.broken_files else ""
        unread = sum(self.skipped.values())
        unread_text = f", {unread} unreadable records" if unread else ""
        return (
            f"{self.files_read} CloudTrail files, {self.records} records{unread_text}, "
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
        name = str(path.relative_to(folder))
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                readout.add_broken(name, f"larger than {MAX_FILE_BYTES:,} bytes")
                continue
            data = path.read_bytes()
        except OSError as exc:
            readout.add_broken(name, type(exc).__name__)
            continue
        readout.add_file(name, data)
    log.info("read CloudTrail folder: %s", readout.summary())
    return readout
