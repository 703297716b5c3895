"""Build PrincipalRecords from `get-account-authorization-details` data, live or exported.

The same builder serves a live scan (pages merged into one document) and `pare analyze` on the
JSON that `aws iam get-account-authorization-details` prints, so no boto3 is needed here. It
also reads the AirIAM snapshot layout (`AccountRoles`, `AccountUsers`, ..., with a
`CredentialReport`), which carries key and password use the plain export lacks.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from bot.domain import AccessKey, LoginProfile, Policy, PrincipalRecord
from bot.errors import PareError

log = logging.getLogger(__name__)

AWS_MANAGED_PREFIX = "arn:aws:iam::aws:policy/"
# The AirIAM snapshot names the same lists differently.
ALIASES = {
    "AccountUsers": "UserDetailList",
    "AccountGroups": "GroupDetailList",
    "AccountRoles": "RoleDetailList",
    "AccountPolicies": "Policies",
}
# Credential-report values that mean "no date".
NO_DATE = frozenset({"", "N/A", "no_information", "not_supported"})


class ExportError(PareError):
    """An exported file that is not authorization-details JSON; names the file."""


def parse_time(value: object) -> datetime | None:
    """Return a UTC datetime from a boto3 datetime or an exported date string."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value.strip() not in NO_DATE:
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        return None


def last_used_time(value: object, what: str, problems: list[str]) -> datetime | None:
    """Return a last-used date, None for "never"; note a value that is no date in problems.

    An unreadable date is not "never used": read as None it would make a principal in daily
    use look idle, so it is reported and the principal fails closed instead.
    """
    if value is None or isinstance(value, datetime):
        return parse_time(value)
    if isinstance(value, str):
        if value.strip() in NO_DATE:
            return None
        moment = parse_time(value)
        if moment is not None:
            return moment
    problems.append(f"{what} {str(value)[:40]!r} is not a date")
    return None


def policy_document(value: object) -> dict[str, Any]:
    """Return a policy document as a dict; the raw API sends it URL-encoded."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        text = value.strip()
        if not text.startswith("{"):
            text = unquote(text)
        loaded = json.loads(text)
        if isinstance(loaded, dict):
            return loaded
    raise ValueError("policy document is not a JSON object")


def account_of(arn: str) -> str:
    """Return the account id field of an ARN."""
    parts = arn.split(":")
    return parts[4] if len(parts) > 4 else ""


def _tags(entity: dict[str, Any]) -> dict[str, str]:
    return {str(t["Key"]): str(t.get("Value", "")) for t in entity.get("Tags") or [] if "Key" in t}


def _default_version(policy: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    default_id = policy.get("DefaultVersionId")
    for version in policy.get("PolicyVersionList") or []:
        if version.get("IsDefaultVersion") or version.get("VersionId") == default_id:
            return version.get("VersionId"), policy_document(version.get("Document"))
    return default_id, None


def _version_date(policy: dict[str, Any], version_id: str | None) -> datetime | None:
    for version in policy.get("PolicyVersionList") or []:
        if version.get("VersionId") == version_id:
            return parse_time(version.get("CreateDate"))
    return None


def managed_origin(arn: str, via_group: bool) -> str:
    """Return the Policy.origin of an attached managed policy."""
    if via_group:
        return "group_managed"
    return "aws_managed" if arn.startswith(AWS_MANAGED_PREFIX) else "managed"


def normalise(details: dict[str, Any]) -> dict[str, Any]:
    """Return the document with the standard list names, whatever layout it came in."""
    out = dict(details)
    for alias, name in ALIASES.items():
        if alias in out and name not in out:
            out[name] = out.pop(alias)
    return out


# What each list of the document holds: the name field that identifies an entry, and its
# fields that must be lists of objects (or of strings, for GroupList).
ENTITY_LISTS = {
    "RoleDetailList": "RoleName",
    "UserDetailList": "UserName",
    "GroupDetailList": "GroupName",
    "Policies": "PolicyName",
}
OBJECT_LISTS = (
    "RolePolicyList",
    "UserPolicyList",
    "GroupPolicyList",
    "AttachedManagedPolicies",
    "Tags",
    "PolicyVersionList",
)


def _objects(value: object, where: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ExportError(f"{where} is not a list")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise ExportError(f"{where}[{i}] is not an object")
    return value


def check_shape(details: dict[str, Any]) -> None:
    """Raise ExportError naming the entity whose fields do not have the export's shapes.

    A half-understood export is refused whole rather than skipped in part: a principal
    dropped silently would look to the reader like one with nothing to report.
    """
    for list_name, name_field in ENTITY_LISTS.items():
        for i, entity in enumerate(_objects(details.get(list_name), list_name)):
            name = entity.get(name_field) or entity.get("Arn")
            where = f"{list_name}[{i}]" + (f" ({str(name)[:80]})" if name else "")
            needed = ("Arn",) if list_name == "Policies" else (name_field,)
            if list_name in ("RoleDetailList", "UserDetailList"):
                needed = (name_field, "Arn")
            for key in needed:
                if not isinstance(entity.get(key), str) or not entity[key]:
                    raise ExportError(f"{where} has no {key}")
            for field_name in OBJECT_LISTS:
                items = _objects(entity.get(field_name), f"{where} {field_name}")
                for j, item in enumerate(items):
                    wanted = {"AttachedManagedPolicies": "PolicyArn", "Tags": "Key"}
                    key = wanted.get(field_name)
                    if key and not isinstance(item.get(key), str):
                        raise ExportError(f"{where} {field_name}[{j}] has no {key}")
            groups = entity.get("GroupList")
            if groups is not None and (
                not isinstance(groups, list) or not all(isinstance(g, str) for g in groups)
            ):
                raise ExportError(f"{where} GroupList is not a list of group names")
            boundary = entity.get("PermissionsBoundary")
            if boundary is not None and not isinstance(boundary, dict):
                raise ExportError(f"{where} PermissionsBoundary is not an object")
    report = details.get("CredentialReport")
    if report is not None:
        _objects(report, "CredentialReport")


class _Builder:
    def __init__(self, details: dict[str, Any]):
        self.details = normalise(details)
        self.managed: dict[str, tuple[str | None, dict[str, Any] | None, str]] = {}
        self.version_dates: dict[str, datetime | None] = {}
        for policy in self.details.get("Policies") or []:
            arn = policy.get("Arn")
            if not arn:
                continue
            try:
                version, document = _default_version(policy)
            except (ValueError, json.JSONDecodeError):
                version, document = policy.get("DefaultVersionId"), None
            self.managed[arn] = (version, document, policy.get("PolicyName", arn))
            self.version_dates[arn] = _version_date(policy, version)
        self.groups = {g.get("GroupName"): g for g in self.details.get("GroupDetailList") or []}
        self.attached: dict[str, set[str]] = defaultdict(set)
        self.group_members: dict[str, set[str]] = defaultdict(set)

    def _blast_radius(self) -> None:
        for user in self.details.get("UserDetailList") or []:
            for group in user.get("GroupList") or []:
                self.group_members[group].add(user["Arn"])
        for kind in ("RoleDetailList", "UserDetailList"):
            for entity in self.details.get(kind) or []:
                for ref in entity.get("AttachedManagedPolicies") or []:
                    self.attached[ref["PolicyArn"]].add(entity["Arn"])
        for name, group in self.groups.items():
            for ref in group.get("AttachedManagedPolicies") or []:
                self.attached[ref["PolicyArn"]].update(self.group_members[name])

    def _managed(
        self, record: PrincipalRecord, ref: dict[str, Any], group: str | None
    ) -> Policy | None:
        arn = ref["PolicyArn"]
        version, document, name = self.managed.get(arn, (None, None, ref.get("PolicyName", arn)))
        if document is None:
            # Without the document nothing can be said about what it grants: fail closed.
            record.read_problems.append(f"managed policy {arn}: default version not readable")
            return None
        others = tuple(sorted(self.attached[arn] - {record.arn}))
        return Policy(
            name=ref.get("PolicyName", name),
            document=document,
            origin=managed_origin(arn, group is not None),
            arn=arn,
            group=group,
            version_id=version,
            # IAM records no date for an attachment. The default version's creation is the
            # closest date AWS gives: a grant can be no older than the document that makes it,
            # so a version younger than the window makes its grants too new to judge. An old
            # version attached yesterday still looks old; that gap is AWS's, and CloudTrail's
            # AttachRolePolicy records are the only way to close it.
            attached_at=self.version_dates.get(arn),
            attached_to=others,
        )

    def _inline(
        self,
        record: PrincipalRecord,
        item: dict[str, Any],
        origin: str,
        group: str | None = None,
    ) -> Policy | None:
        try:
            document = policy_document(item.get("PolicyDocument"))
        except (ValueError, json.JSONDecodeError):
            record.read_problems.append(f"inline policy {item.get('PolicyName')}: unreadable")
            return None
        # A group's inline policy is shared by every member: that is its blast radius too.
        others = tuple(sorted(self.group_members[group] - {record.arn})) if group else ()
        return Policy(
            name=item.get("PolicyName", ""),
            document=document,
            origin=origin,
            group=group,
            attached_to=others,
        )

    def _record(self, entity: dict[str, Any], kind: str) -> PrincipalRecord:
        name = entity["RoleName"] if kind == "role" else entity["UserName"]
        boundary = entity.get("PermissionsBoundary") or {}
        record = PrincipalRecord(
            account_id=account_of(entity["Arn"]),
            arn=entity["Arn"],
            kind=kind,  # type: ignore[arg-type]
            name=name,
            path=entity.get("Path", "/"),
            created_at=parse_time(entity.get("CreateDate")),
            tags=_tags(entity),
            boundary_arn=boundary.get("PermissionsBoundaryArn"),
        )
        inline_key = "RolePolicyList" if kind == "role" else "UserPolicyList"
        policies: list[Policy | None] = [
            self._inline(record, item, "inline") for item in entity.get(inline_key) or []
        ]
        policies += [
            self._managed(record, ref, None) for ref in entity.get("AttachedManagedPolicies") or []
        ]
        for group_name in entity.get("GroupList") or []:
            record.groups.append(group_name)
            group = self.groups.get(group_name)
            if group is None:
                record.read_problems.append(f"group {group_name}: not in the listing")
                continue
            policies += [
                self._inline(record, item, "group_inline", group_name)
                for item in group.get("GroupPolicyList") or []
            ]
            policies += [
                self._managed(record, ref, group_name)
                for ref in group.get("AttachedManagedPolicies") or []
            ]
        record.policies = [p for p in policies if p is not None]
        problems = record.read_problems
        if kind == "role":
            last = entity.get("RoleLastUsed")
            # An export without RoleLastUsed at all says nothing; an empty one says "never".
            record.last_used_known = last is not None
            if last is not None and not isinstance(last, dict):
                problems.append("RoleLastUsed is not an object")
            elif last:
                record.last_used_at = last_used_time(
                    last.get("LastUsedDate"), "RoleLastUsed.LastUsedDate", problems
                )
                record.last_used_region = last.get("Region")
        else:
            record.last_used_at = last_used_time(
                entity.get("PasswordLastUsed"), "PasswordLastUsed", problems
            )
        return record

    def build(self) -> list[PrincipalRecord]:
        self._blast_radius()
        records = [self._record(r, "role") for r in self.details.get("RoleDetailList") or []]
        records += [self._record(u, "user") for u in self.details.get("UserDetailList") or []]
        return records


def build_principals(details: dict[str, Any]) -> list[PrincipalRecord]:
    """Return a PrincipalRecord for every role and user in authorization-details data."""
    return _Builder(details).build()


def user_last_used(record: PrincipalRecord) -> datetime | None:
    """Return a user's latest use of its password or any of its access keys."""
    moments = [k.last_used_at for k in record.access_keys if k.last_used_at]
    if record.login_profile and record.login_profile.last_used_at:
        moments.append(record.login_profile.last_used_at)
    return max(moments, default=None)


def _key(row: dict[str, str], n: int, problems: list[str]) -> AccessKey | None:
    if row.get(f"access_key_{n}_active") not in ("true", "false"):
        return None
    rotated = row.get(f"access_key_{n}_last_rotated", "N/A")
    if rotated in NO_DATE:
        return None
    service = row.get(f"access_key_{n}_last_used_service")
    return AccessKey(
        # The credential report has no key ids; the slot stands in for one.
        key_id=f"{row.get('user', '')}#key{n}",
        status="Active" if row[f"access_key_{n}_active"] == "true" else "Inactive",
        created_at=parse_time(rotated),
        last_used_at=last_used_time(
            row.get(f"access_key_{n}_last_used_date"),
            f"credential report access_key_{n}_last_used_date",
            problems,
        ),
        last_used_service=None if service in NO_DATE else service,
    )


def report_keys(row: dict[str, str], problems: list[str] | None = None) -> list[AccessKey]:
    """Return a credential-report row's access keys (key ids stand in as `user#keyN`).

    A last-used date that is no date is noted in `problems` (the principal's read problems).
    """
    problems = [] if problems is None else problems
    return [k for k in (_key(row, 1, problems), _key(row, 2, problems)) if k is not None]


def report_login_profile(
    row: dict[str, str], problems: list[str] | None = None
) -> LoginProfile | None:
    """Return a credential-report row's console password, or None if it has none."""
    if row.get("password_enabled") != "true":
        return None
    # The report has no creation date for the password; the last change is the newest date
    # from which it could be judged, so a recently reset password is too new, not unused.
    return LoginProfile(
        created_at=parse_time(row.get("password_last_changed")),
        last_used_at=last_used_time(
            row.get("password_last_used"),
            "credential report password_last_used",
            [] if problems is None else problems,
        ),
    )


def apply_credential_report(
    records: Iterable[PrincipalRecord], rows: Iterable[dict[str, str]]
) -> None:
    """Fill users' access keys and console passwords from credential-report rows."""
    by_arn = {row.get("arn"): row for row in rows}
    for record in records:
        if record.kind != "user":
            continue
        row = by_arn.get(record.arn)
        if row is None:
            record.last_used_known = False
            continue
        record.access_keys = report_keys(row, record.read_problems)
        record.login_profile = report_login_profile(row, record.read_problems)
        record.last_used_at = user_last_used(record)
        record.last_used_known = True


def principals_from_export(details: dict[str, Any]) -> list[PrincipalRecord]:
    """Return PrincipalRecords from an exported document, with its credential report if any."""
    records = build_principals(details)
    report = details.get("CredentialReport")
    if isinstance(report, list):
        apply_credential_report(records, report)
    else:
        # A plain export has no keys or passwords: their use is unknown, not "none".
        for record in records:
            if record.kind == "user":
                record.last_used_known = False
    return records


def read_json_file(path: Path) -> Any:
    """Read a JSON file given on the command line; errors name the file, never a traceback."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ExportError(f"{path}: not readable JSON ({type(exc).__name__})") from None


def load_export(path: Path) -> list[PrincipalRecord]:
    """Read an exported authorization-details JSON file; errors name the file."""
    details = read_json_file(path)
    if not isinstance(details, dict) or not any(
        k in details for k in ("RoleDetailList", "UserDetailList", "AccountRoles", "AccountUsers")
    ):
        raise ExportError(f"{path}: not `aws iam get-account-authorization-details` output")
    try:
        check_shape(normalise(details))
        records = principals_from_export(details)
    except ExportError as exc:
        raise ExportError(f"{path}: {exc}") from None
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as exc:
        # A shape check_shape does not know yet: still one line naming the file, no traceback.
        raise ExportError(f"{path}: unexpected shape ({type(exc).__name__}: {exc})") from None
    log.info("read export %s: %d principals", path.name, len(records))
    return records
