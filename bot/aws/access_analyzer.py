"""IAM Access Analyzer unused-access findings of one account, read through boto3.

An unused-access analyzer (of the account, or of the organisation when Pare reads the
delegated administrator) has already judged every role and user. Pare reads its findings,
every page of every list, and for unused permissions asks for AWS's recommendation (which
policy to detach, which trimmed copy to create) and keeps it for the removal step.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore import xform_name
from botocore.exceptions import BotoCoreError, ClientError

from bot.aws.session import AccountSession, Sleep, backoff_delays, error_code, with_backoff
from bot.evidence.access_analyzer import Analyzer

log = logging.getLogger(__name__)

UNUSED_ACCESS_TYPES = ("ACCOUNT_UNUSED_ACCESS", "ORGANIZATION_UNUSED_ACCESS")
FINDING_TYPES = (
    "UnusedIAMRole",
    "UnusedIAMUserAccessKey",
    "UnusedIAMUserPassword",
    "UnusedPermission",
)
# Access Analyzer's own default, when an analyzer's configuration does not say.
DEFAULT_UNUSED_ACCESS_AGE = 90
# AWS allows up to 100 findings a page (and 1,000 recommended steps).
PAGE_SIZE = 100
# ListFindingsV2's filter takes at most 20 values per key (ValueList in the API model).
FILTER_VALUES = 20
ORGANIZATION_TYPE = "ORGANIZATION_UNUSED_ACCESS"
# A recommendation is usually ready in seconds; waiting longer than this would hold a whole
# account's scan for one removal hint the removal step can ask for again.
RECOMMENDATION_WAIT = 60.0


@dataclass
class AnalyzerRead:
    """What one account's analyzer said: its findings in full, and what could not be read."""

    account_id: str
    analyzer: Analyzer | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)
    # Problems that touch every principal (the list itself could not be read).
    problems: list[str] = field(default_factory=list)
    # Problems that touch one principal (its finding could not be read), by resource ARN.
    principal_problems: dict[str, list[str]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    # The delegated administrator account, when the organisation's analyzer spoke.
    admin_account: str | None = None

    def speaker(self) -> str:
        """Return which analyzer spoke, for the scan report."""
        if self.analyzer is None:
            return "no analyzer"
        if self.admin_account:
            return (
                f"organisation analyzer {self.analyzer.arn} "
                f"in delegated administrator {self.admin_account}"
            )
        return f"analyzer {self.analyzer.arn}"


def _analyzer(summary: dict[str, Any]) -> Analyzer:
    config = (summary.get("configuration") or {}).get("unusedAccess") or {}
    accounts: set[str] = set()
    tags: list[dict[str, str]] = []
    for rule in (config.get("analysisRule") or {}).get("exclusions") or []:
        accounts.update(rule.get("accountIds") or [])
        tags.extend(rule.get("resourceTags") or [])
    return Analyzer(
        arn=summary["arn"],
        type=summary["type"],
        unused_access_age=int(config.get("unusedAccessAge") or DEFAULT_UNUSED_ACCESS_AGE),
        analyzed_at=summary.get("lastResourceAnalyzedAt"),
        excluded_accounts=frozenset(accounts),
        excluded_tags=tuple(tags),
    )


class _Reader:
    def __init__(self, client: Any, account_id: str, sleep: Sleep):
        self.client = client
        self.sleep = sleep
        self.read = AnalyzerRead(account_id)

    def call(self, name: str, **params: Any) -> dict[str, Any]:
        method = getattr(self.client, xform_name(name))

        def attempt(**kwargs: Any) -> dict[str, Any]:
            # Every attempt counts against AWS's quota, so every attempt is counted.
            self.read.calls[f"access-analyzer:{name}"] += 1
            return method(**kwargs)

        return with_backoff(attempt, sleep=self.sleep, **params)

    def pages(
        self, name: str, first: dict[str, Any] | None = None, **params: Any
    ) -> Iterator[dict[str, Any]]:
        """Yield every page of a call that pages with nextToken (after `first`, if given)."""
        page = first if first is not None else self.call(name, **params)
        yield page
        while page.get("nextToken"):
            page = self.call(name, nextToken=page["nextToken"], **params)
            yield page

    def find_analyzer(self) -> Analyzer | None:
        found = [a for page in self.pages("ListAnalyzers") for a in page.get("analyzers") or []]
        usable = [a for a in found if a["type"] in UNUSED_ACCESS_TYPES and a["status"] == "ACTIVE"]
        # The account's own analyzer first: its exclusions were chosen for this account.
        usable.sort(key=lambda a: UNUSED_ACCESS_TYPES.index(a["type"]))
        return _analyzer(usable[0]) if usable else None

    def list_findings(
        self, analyzer: Analyzer, owners: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Return every active unused-access finding of the owners (this account by default)."""
        criteria = {
            "resourceOwnerAccount": {"eq": owners or [self.read.account_id]},
            "status": {"eq": ["ACTIVE"]},
            "findingType": {"eq": list(FINDING_TYPES)},
        }
        pages = self.pages(
            "ListFindingsV2", analyzerArn=analyzer.arn, filter=criteria, maxResults=PAGE_SIZE
        )
        return [f for page in pages for f in page.get("findings") or []]

    def finding(self, analyzer: Analyzer, summary: dict[str, Any]) -> dict[str, Any]:
        """Return the finding with every page of its details (one entry per service)."""
        pages = list(self.pages("GetFindingV2", analyzerArn=analyzer.arn, id=summary["id"]))
        finding = {k: v for k, v in pages[0].items() if k not in ("ResponseMetadata", "nextToken")}
        finding["findingDetails"] = [d for page in pages for d in page.get("findingDetails") or []]
        return finding

    def recommendation(self, analyzer: Analyzer, finding_id: str) -> dict[str, Any]:
        """Ask for the finding's recommendation and wait, with backoff, until it is ready."""
        self.call("GenerateFindingRecommendation", analyzerArn=analyzer.arn, id=finding_id)
        params = {"analyzerArn": analyzer.arn, "id": finding_id}
        delays = backoff_delays(first=1.0, cap=8.0, total=RECOMMENDATION_WAIT)
        while True:
            page = self.call("GetFindingRecommendation", **params)
            if page.get("status") != "IN_PROGRESS":
                break
            delay = next(delays, None)
            if delay is None:
                return {"status": "IN_PROGRESS", "error": "still in progress when Pare stopped"}
            self.sleep(delay)
        pages = self.pages("GetFindingRecommendation", page, **params)
        steps = [s for p in pages for s in p.get("recommendedSteps") or []]
        out = {
            "status": page.get("status"),
            "recommendationType": page.get("recommendationType"),
            "recommendedSteps": [_plain(s) for s in steps],
            "completedAt": _iso(page.get("completedAt")),
        }
        if page.get("error"):
            out["error"] = page["error"].get("message") or page["error"].get("code")
        return out


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else value


def _plain(value: Any) -> Any:
    """Return a response fragment as JSON-ready data (datetimes as ISO text)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return _iso(value)


def _read_findings(
    reader: _Reader,
    analyzer: Analyzer,
    summaries: Iterable[dict[str, Any]],
    recommendations: bool,
) -> None:
    """Read each listed finding in full (and its recommendation) into the reader's read."""
    read = reader.read
    for summary in summaries:
        resource = summary.get("resource") or ""
        try:
            finding = reader.finding(analyzer, summary)
        except (ClientError, BotoCoreError) as exc:
            code = error_code(exc)
            read.principal_problems.setdefault(resource, []).append(
                f"Access Analyzer finding {summary['id']} not readable: {code}"
            )
            log.warning(
                "finding not readable: account=%s principal=%s finding=%s code=%s",
                read.account_id,
                resource,
                summary["id"],
                code,
            )
            continue
        if recommendations and finding.get("findingType") == "UnusedPermission":
            try:
                finding["recommendation"] = reader.recommendation(analyzer, finding["id"])
            except (ClientError, BotoCoreError) as exc:
                finding["recommendation"] = {"status": "FAILED", "error": error_code(exc)}
        read.findings.append(finding)
    log.info(
        "read analyzer: account=%s analyzer=%s findings=%d calls=%d",
        read.account_id,
        analyzer.arn,
        len(read.findings),
        sum(read.calls.values()),
    )


def read_unused_access(
    session: AccountSession,
    *,
    client: Any | None = None,
    sleep: Sleep = time.sleep,
    recommendations: bool = True,
) -> AnalyzerRead:
    """Read the account's unused-access findings; no analyzer gives a read with none.

    Failing to list the findings is a problem for every principal of the account; failing to
    read one finding is a problem for its principal only. A recommendation that fails or is
    slow is kept as such on the finding: it is a hint for the removal step, not evidence.
    """
    client = client or session.client("accessanalyzer")
    reader = _Reader(client, session.account.id, sleep)
    read = reader.read
    try:
        analyzer = reader.find_analyzer()
    except (ClientError, BotoCoreError) as exc:
        read.problems.append(f"access analyzers not listable: {error_code(exc)}")
        log.warning("analyzers not listable: account=%s code=%s", read.account_id, error_code(exc))
        return read
    if analyzer is None:
        log.info("no unused-access analyzer: account=%s", read.account_id)
        return read
    read.analyzer = analyzer
    try:
        summaries = reader.list_findings(analyzer)
    except (ClientError, BotoCoreError) as exc:
        read.problems.append(f"Access Analyzer findings not listable: {error_code(exc)}")
        log.warning("findings not listable: account=%s code=%s", read.account_id, error_code(exc))
        return read
    _read_findings(reader, analyzer, summaries, recommendations)
    return read


@dataclass
class OrganizationRead:
    """The organisation analyzer's finding list, read once a scan in the delegated admin.

    Each member account's share is read in full (GetFindingV2 and recommendations, through
    the same delegated-admin client) by that account's own scan, so the slow part runs in the
    scan's worker threads rather than ahead of every account.
    """

    admin_account: str
    client: Any
    analyzer: Analyzer | None = None
    # Finding summaries by the member account that owns the resource.
    summaries: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # Problems of the read as a whole: any of them fails every member account closed.
    problems: list[str] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    sleep: Sleep = time.sleep
    recommendations: bool = True

    def share(self, account_id: str) -> AnalyzerRead:
        """Return one member account's findings, each read in full from the delegated admin."""
        reader = _Reader(self.client, account_id, self.sleep)
        read = reader.read
        read.admin_account = self.admin_account
        if self.problems:
            # A partial list could be silent about an unused grant, and silence means "used":
            # every member is failed closed. Without the analyzer's own entry a stand-in
            # carries the problem, so each principal's evidence still says it.
            read.analyzer = self.analyzer or Analyzer(
                arn=f"organisation analyzer in {self.admin_account}",
                type=ORGANIZATION_TYPE,
                unused_access_age=DEFAULT_UNUSED_ACCESS_AGE,
            )
            read.problems = list(self.problems)
            return read
        if self.analyzer is None or account_id in self.analyzer.excluded_accounts:
            # An excluded account is not judged at all: no analyzer speaks for it, so the
            # account's other sources may.
            read.admin_account = None
            return read
        read.analyzer = self.analyzer
        _read_findings(
            reader, self.analyzer, self.summaries.get(account_id, []), self.recommendations
        )
        return read


def read_organization_unused_access(
    session: AccountSession,
    accounts: Iterable[str],
    *,
    analyzer_arn: str | None = None,
    client: Any | None = None,
    sleep: Sleep = time.sleep,
) -> OrganizationRead:
    """List the organisation analyzer's findings for the member accounts, every page, once.

    `session` acts in the delegated administrator account. The analyzer is the one named, or
    the only active organisation unused-access analyzer there. A failed call leaves a problem
    that fails every member account closed, never a shorter list.
    """
    client = client or session.client("accessanalyzer")
    org = OrganizationRead(session.account.id, client, sleep=sleep)
    reader = _Reader(client, org.admin_account, sleep)
    org.calls = reader.read.calls
    wanted = sorted(set(accounts))
    try:
        found = [
            a
            for page in reader.pages("ListAnalyzers", type=ORGANIZATION_TYPE)
            for a in page.get("analyzers") or []
            if a["type"] == ORGANIZATION_TYPE and a["status"] == "ACTIVE"
        ]
        if analyzer_arn:
            found = [a for a in found if a["arn"] == analyzer_arn]
        if len(found) != 1:
            what = analyzer_arn or "an active organisation unused-access analyzer"
            org.problems.append(
                f"{what} not found in {org.admin_account}"
                if not found
                else f"{len(found)} organisation analyzers in {org.admin_account}; "
                "name one with analyzer_arn"
            )
            log.warning(
                "organisation analyzer not chosen: admin=%s found=%d", org.admin_account, len(found)
            )
            return org
        org.analyzer = _analyzer(found[0])
        # The owner filter keeps the list to the accounts being scanned; it takes 20 at most.
        for start in range(0, len(wanted), FILTER_VALUES):
            owners = wanted[start : start + FILTER_VALUES]
            for summary in reader.list_findings(org.analyzer, owners):
                owner = summary.get("resourceOwnerAccount", "")
                org.summaries.setdefault(owner, []).append(summary)
    except (ClientError, BotoCoreError) as exc:
        code = error_code(exc)
        org.problems.append(f"organisation Access Analyzer findings not listable: {code}")
        org.summaries = {}
        log.warning("organisation findings not listable: admin=%s code=%s", org.admin_account, code)
        return org
    log.info(
        "listed organisation analyzer: admin=%s analyzer=%s accounts=%d findings=%d calls=%d",
        org.admin_account,
        org.analyzer.arn,
        len(wanted),
        sum(len(v) for v in org.summaries.values()),
        sum(org.calls.values()),
    )
    return org
