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
from collections.abc import Iterator
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

    def list_findings(self, analyzer: Analyzer) -> list[dict[str, Any]]:
        criteria = {
            "resourceOwnerAccount": {"eq": [self.read.account_id]},
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
    return read
