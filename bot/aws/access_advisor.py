"""Access Advisor read live: one last-accessed job per principal, polled, every page read.

IAM builds a principal's last-accessed report as a job. Pare starts a batch of jobs, polls
them together with growing waits (a job takes seconds, sometimes minutes), and reads every
page of each. A job that fails, is still running when the wait runs out, or whose pages
cannot all be read gives evidence that carries the problem, so its principal fails closed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bot.aws.session import AccountSession, Sleep, backoff_delays, error_code, with_backoff
from bot.domain import PrincipalRecord, UsageEvidence
from bot.evidence.access_advisor import from_last_accessed

log = logging.getLogger(__name__)

# Jobs in flight at once: enough to overlap IAM's work, few enough to stay under its quota.
JOBS_IN_FLIGHT = 20
# IAM's largest page: one page covers every service for nearly every principal.
PAGE_SIZE = 1000
# How long one batch of jobs may take before its stragglers are given up on.
JOB_WAIT = 180.0


@dataclass
class AdvisorRead:
    """Access Advisor evidence per principal ARN, and the calls it took."""

    evidence: dict[str, UsageEvidence] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)


class _Jobs:
    def __init__(self, iam: Any, account_id: str, sleep: Sleep, granularity: str):
        self.iam = iam
        self.account_id = account_id
        self.sleep = sleep
        self.granularity = granularity
        self.read = AdvisorRead()

    def call(self, name: str, method: Any, **params: Any) -> dict[str, Any]:
        def attempt(**kwargs: Any) -> dict[str, Any]:
            self.read.calls[f"iam:{name}"] += 1
            return method(**kwargs)

        return with_backoff(attempt, sleep=self.sleep, **params)

    def failed(self, arn: str, what: str, exc: Exception) -> dict[str, Any]:
        code = error_code(exc)
        log.warning(
            "last-accessed %s failed: account=%s principal=%s code=%s",
            what,
            self.account_id,
            arn,
            code,
        )
        return {"JobStatus": "FAILED", "Error": {"Message": f"{what}: {code}"}}

    def start(self, arn: str) -> str | dict[str, Any]:
        try:
            answer = self.call(
                "GenerateServiceLastAccessedDetails",
                self.iam.generate_service_last_accessed_details,
                Arn=arn,
                Granularity=self.granularity,
            )
        except (ClientError, BotoCoreError) as exc:
            return self.failed(arn, "job not started", exc)
        return str(answer["JobId"])

    def page(self, job_id: str, marker: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"JobId": job_id, "MaxItems": PAGE_SIZE}
        if marker:
            params["Marker"] = marker
        return self.call(
            "GetServiceLastAccessedDetails",
            self.iam.get_service_last_accessed_details,
            **params,
        )

    def rest(self, arn: str, first: dict[str, Any]) -> dict[str, Any]:
        """Return the whole report: the first page with every later page's services added."""
        details = {k: v for k, v in first.items() if k != "ResponseMetadata"}
        services = list(first.get("ServicesLastAccessed") or [])
        page = first
        while page.get("IsTruncated"):
            try:
                page = self.page(details["JobId"], page.get("Marker"))
            except (ClientError, BotoCoreError) as exc:
                code = error_code(exc)
                log.warning(
                    "last-accessed page failed: account=%s principal=%s code=%s",
                    self.account_id,
                    arn,
                    code,
                )
                # Left truncated, the evidence says a page is missing.
                details["IsTruncated"] = True
                break
            services.extend(page.get("ServicesLastAccessed") or [])
            details["IsTruncated"] = page.get("IsTruncated", False)
        details["ServicesLastAccessed"] = services
        return details

    def batch(self, arns: list[str]) -> dict[str, dict[str, Any]]:
        done: dict[str, dict[str, Any]] = {}
        pending: dict[str, str] = {}
        for arn in arns:
            started = self.start(arn)
            if isinstance(started, dict):
                done[arn] = started
            else:
                pending[arn] = started
        delays = backoff_delays(first=1.0, cap=15.0, total=JOB_WAIT)
        while pending:
            for arn, job_id in list(pending.items()):
                try:
                    first = self.page(job_id)
                except (ClientError, BotoCoreError) as exc:
                    done[arn] = self.failed(arn, "job not readable", exc)
                    del pending[arn]
                    continue
                if first.get("JobStatus") == "IN_PROGRESS":
                    continue
                done[arn] = self.rest(arn, {**first, "JobId": job_id})
                del pending[arn]
            if not pending:
                break
            delay = next(delays, None)
            if delay is None:
                for arn in pending:
                    log.warning(
                        "last-accessed job too slow: account=%s principal=%s",
                        self.account_id,
                        arn,
                    )
                    done[arn] = {"JobStatus": "IN_PROGRESS"}
                break
            self.sleep(delay)
        return done


def read_last_accessed(
    session: AccountSession,
    principals: Iterable[PrincipalRecord],
    *,
    iam: Any | None = None,
    sleep: Sleep = time.sleep,
    action_level: bool = True,
    read_at: datetime | None = None,
    jobs_in_flight: int = JOBS_IN_FLIGHT,
) -> AdvisorRead:
    """Return Access Advisor evidence for each principal (ACTION_LEVEL unless told not to)."""
    jobs = _Jobs(
        iam or session.client("iam"),
        session.account.id,
        sleep,
        "ACTION_LEVEL" if action_level else "SERVICE_LEVEL",
    )
    arns = [p.arn for p in principals]
    for start in range(0, len(arns), jobs_in_flight):
        for arn, details in jobs.batch(arns[start : start + jobs_in_flight]).items():
            jobs.read.evidence[arn] = from_last_accessed(details, read_at=read_at)
    log.info(
        "read last-accessed: account=%s principals=%d calls=%d",
        session.account.id,
        len(arns),
        sum(jobs.read.calls.values()),
    )
    return jobs.read
