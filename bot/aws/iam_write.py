"""IAM writes for removals and undos: the only place Pare changes AWS.

Every operation is safe to repeat, because a crash can come after AWS acted and before the
database heard of it: a resumed change calls the same step again, and the step finds its work
done (a policy that already exists with the same document, a detach of what is not attached).
AWS refusals come back as IamWriteError naming the principal, policy and account.
"""

from __future__ import annotations

import json
import logging
import secrets
import string
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bot.aws.export import policy_document
from bot.aws.session import error_code
from bot.errors import PareError

log = logging.getLogger(__name__)

AWS_MANAGED_PREFIX = "arn:aws:iam::aws:policy/"
# Codes that mean "AWS will not do this"; recorded as a refusal and never retried blindly.
REFUSALS = frozenset(
    {
        "UnmodifiableEntity",
        "NoSuchEntity",
        "LimitExceeded",
        "DeleteConflict",
        "MalformedPolicyDocument",
        "EntityAlreadyExists",
        "AccessDenied",
        "AccessDeniedException",
        "Throttling",
        "ThrottlingException",
        "InvalidInput",
        "ServiceFailure",
    }
)
PASSWORD_LENGTH = 32


class IamWriteError(PareError):
    """AWS refused or failed a write; names the account, principal, policy and call."""

    def __init__(
        self, account_id: str, op: str, code: str, principal: str, policy: str | None = None
    ):
        on = f" policy {policy}" if policy else ""
        super().__init__(f"account {account_id}: {op} on {principal}{on} refused: {code}")
        self.account_id = account_id
        self.op = op
        self.code = code
        self.principal = principal
        self.policy = policy


def canonical(document: dict[str, Any]) -> str:
    """Return a document as compact, key-sorted JSON, for comparing documents."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"))


def random_password() -> str:
    """Return a password for a recreated login profile; it must be reset at first sign-in."""
    alphabet = string.ascii_letters + string.digits + "!@#%^*()-_=+"
    core = "".join(secrets.choice(alphabet) for _ in range(PASSWORD_LENGTH - 4))
    # One of each class satisfies any account password policy Pare is likely to meet.
    return core + secrets.choice("ABCDEFGH") + secrets.choice("abcdefgh") + "7!"


class IamWriter:
    """Reads a principal's whole state and makes the calls of a change, in one account."""

    def __init__(self, iam: Any, account_id: str):
        self.iam = iam
        self.account_id = account_id

    # -- reading the before-state ------------------------------------------------------------

    def _pages(self, method: str, key: str, **params: Any) -> list[Any]:
        out: list[Any] = []
        for page in self.iam.get_paginator(method).paginate(**params):
            out.extend(page.get(key) or [])
        return out

    def policy_state(self, arn: str) -> dict[str, Any]:
        """Return a managed policy's versions (documents, default) and who it is attached to."""
        meta = self.iam.get_policy(PolicyArn=arn)["Policy"]
        state: dict[str, Any] = {
            "arn": arn,
            "name": meta["PolicyName"],
            "path": meta.get("Path", "/"),
            "default_version": meta["DefaultVersionId"],
            "aws_managed": arn.startswith(AWS_MANAGED_PREFIX),
        }
        if state["aws_managed"]:
            version = self.iam.get_policy_version(PolicyArn=arn, VersionId=meta["DefaultVersionId"])
            document = policy_document(version["PolicyVersion"]["Document"])
            state["versions"] = [{"id": meta["DefaultVersionId"], "default": True, "doc": document}]
        else:
            versions = []
            for item in self._pages("list_policy_versions", "Versions", PolicyArn=arn):
                full = self.iam.get_policy_version(PolicyArn=arn, VersionId=item["VersionId"])
                versions.append(
                    {
                        "id": item["VersionId"],
                        "default": bool(item.get("IsDefaultVersion")),
                        "doc": policy_document(full["PolicyVersion"]["Document"]),
                        "created": str(item.get("CreateDate") or ""),
                    }
                )
            state["versions"] = versions
        entities: dict[str, list[str]] = {"roles": [], "users": [], "groups": []}
        paginator = self.iam.get_paginator("list_entities_for_policy")
        for page in paginator.paginate(PolicyArn=arn):
            entities["roles"] += [r["RoleName"] for r in page.get("PolicyRoles") or []]
            entities["users"] += [u["UserName"] for u in page.get("PolicyUsers") or []]
            entities["groups"] += [g["GroupName"] for g in page.get("PolicyGroups") or []]
        state["attached_to"] = entities
        return state

    def find_policy(self, arn: str) -> dict[str, Any] | None:
        """Return a managed policy's state, or None if it no longer exists."""
        try:
            return self.policy_state(arn)
        except ClientError as exc:
            code = error_code(exc)
            if code == "NoSuchEntity":
                return None
            raise IamWriteError(self.account_id, "read", code, "-", arn) from None

    def _group_state(self, group: str) -> dict[str, Any]:
        names = self._pages("list_group_policies", "PolicyNames", GroupName=group)
        inline = {
            n: policy_document(
                self.iam.get_group_policy(GroupName=group, PolicyName=n)["PolicyDocument"]
            )
            for n in names
        }
        attached = self._pages("list_attached_group_policies", "AttachedPolicies", GroupName=group)
        docs = {}
        for ref in attached:
            meta = self.iam.get_policy(PolicyArn=ref["PolicyArn"])["Policy"]
            version = self.iam.get_policy_version(
                PolicyArn=ref["PolicyArn"], VersionId=meta["DefaultVersionId"]
            )
            docs[ref["PolicyArn"]] = policy_document(version["PolicyVersion"]["Document"])
        return {"inline": inline, "managed": docs}

    def read_state(self, kind: str, name: str) -> dict[str, Any]:
        """Return everything needed to undo a change to this role or user."""
        try:
            return self._read_state(kind, name)
        except ClientError as exc:
            raise IamWriteError(self.account_id, "read", error_code(exc), name) from None

    def _common(self, kind: str, name: str) -> tuple[dict[str, Any], list[Any]]:
        """Read what roles and users share: tags, inline policies, attached policy refs."""
        noun = "Role" if kind == "role" else "User"
        who = {f"{noun}Name": name}
        low = kind
        tags = self._pages(f"list_{low}_tags", "Tags", **who)
        names = self._pages(f"list_{low}_policies", "PolicyNames", **who)
        get_inline = getattr(self.iam, f"get_{low}_policy")
        inline = {
            n: policy_document(get_inline(PolicyName=n, **who)["PolicyDocument"]) for n in names
        }
        attached = self._pages(f"list_attached_{low}_policies", "AttachedPolicies", **who)
        state = {"tags": {t["Key"]: t["Value"] for t in tags}, "inline": inline}
        return state, attached

    def _read_state(self, kind: str, name: str) -> dict[str, Any]:
        state: dict[str, Any] = {"kind": kind, "name": name, "account_id": self.account_id}
        if kind == "role":
            role = self.iam.get_role(RoleName=name)["Role"]
            state["role"] = {
                "path": role.get("Path", "/"),
                "trust": policy_document(role["AssumeRolePolicyDocument"]),
                "description": role.get("Description"),
                "max_session": role.get("MaxSessionDuration"),
                "boundary": (role.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn"),
            }
            common, attached = self._common(kind, name)
            state |= common
            profiles = self._pages(
                "list_instance_profiles_for_role", "InstanceProfiles", RoleName=name
            )
            state["instance_profiles"] = [p["InstanceProfileName"] for p in profiles]
            state["groups"] = {}
        else:
            user = self.iam.get_user(UserName=name)["User"]
            state["user"] = {"path": user.get("Path", "/")}
            common, attached = self._common(kind, name)
            state |= common
            keys = self._pages("list_access_keys", "AccessKeyMetadata", UserName=name)
            state["access_keys"] = {k["AccessKeyId"]: k["Status"] for k in keys}
            try:
                self.iam.get_login_profile(UserName=name)
                state["login_profile"] = True
            except ClientError as exc:
                if error_code(exc) != "NoSuchEntity":
                    raise
                state["login_profile"] = False
            groups = self._pages("list_groups_for_user", "Groups", UserName=name)
            state["groups"] = {g["GroupName"]: self._group_state(g["GroupName"]) for g in groups}
        state["managed"] = {
            ref["PolicyArn"]: self.policy_state(ref["PolicyArn"]) for ref in attached
        }
        return state

    # -- writing -------------------------------------------------------------------------------

    def call(self, op: str, params: dict[str, Any]) -> dict[str, Any]:
        """Make one step's call; return what it produced (a new policy ARN or version id)."""
        method: Callable[..., dict[str, Any]] = getattr(self, f"_op_{op}")
        principal = str(params.get("principal") or params.get("name") or "-")
        policy = params.get("arn") or params.get("policy")
        try:
            result = method(**params)
        except ClientError as exc:
            code = error_code(exc)
            log.warning(
                "iam refused: account=%s op=%s principal=%s policy=%s code=%s",
                self.account_id,
                op,
                principal,
                policy,
                code,
            )
            raise IamWriteError(self.account_id, op, code, principal, policy) from None
        except BotoCoreError as exc:
            # Retries (adaptive, in the client) are exhausted: a recorded outcome, not a crash.
            raise IamWriteError(self.account_id, op, error_code(exc), principal, policy) from None
        log.info("iam call: account=%s op=%s principal=%s", self.account_id, op, principal)
        return result

    def _gone_is_done(self, fn: Callable[[], Any]) -> dict[str, Any]:
        try:
            fn()
        except ClientError as exc:
            if error_code(exc) != "NoSuchEntity":
                raise
            return {"already": True}
        return {}

    def _op_put_inline(
        self, kind: str, principal: str, policy: str, doc: dict[str, Any], **_: Any
    ) -> dict[str, Any]:
        text = json.dumps(doc)
        if kind == "role":
            self.iam.put_role_policy(RoleName=principal, PolicyName=policy, PolicyDocument=text)
        else:
            self.iam.put_user_policy(UserName=principal, PolicyName=policy, PolicyDocument=text)
        return {}

    def _op_delete_inline(self, kind: str, principal: str, policy: str, **_: Any) -> dict[str, Any]:
        if kind == "role":
            return self._gone_is_done(
                lambda: self.iam.delete_role_policy(RoleName=principal, PolicyName=policy)
            )
        return self._gone_is_done(
            lambda: self.iam.delete_user_policy(UserName=principal, PolicyName=policy)
        )

    def policy_arn(self, path: str, name: str) -> str:
        """Return the ARN a customer-managed policy of this path and name has."""
        return f"arn:aws:iam::{self.account_id}:policy{path}{name}"

    def _default_doc(self, arn: str) -> dict[str, Any]:
        meta = self.iam.get_policy(PolicyArn=arn)["Policy"]
        version = self.iam.get_policy_version(PolicyArn=arn, VersionId=meta["DefaultVersionId"])
        return policy_document(version["PolicyVersion"]["Document"])

    def _op_create_policy(
        self, name: str, path: str, doc: dict[str, Any], description: str = "", **_: Any
    ) -> dict[str, Any]:
        arn = self.policy_arn(path, name)
        try:
            created = self.iam.create_policy(
                PolicyName=name, Path=path, PolicyDocument=json.dumps(doc), Description=description
            )
            return {"arn": created["Policy"]["Arn"]}
        except ClientError as exc:
            if error_code(exc) != "EntityAlreadyExists":
                raise
        # Created before a crash: ours only if it says exactly what we meant to write.
        if canonical(self._default_doc(arn)) != canonical(doc):
            raise ClientError(
                {"Error": {"Code": "EntityAlreadyExists", "Message": "different document"}},
                "CreatePolicy",
            )
        return {"arn": arn, "already": True}

    def _op_delete_policy(self, arn: str, **_: Any) -> dict[str, Any]:
        try:
            state = self.policy_state(arn)
        except ClientError as exc:
            if error_code(exc) == "NoSuchEntity":
                return {"already": True}
            raise
        # AWS refuses to delete an attached policy, but moto does not: never rely on it.
        if any(state["attached_to"].values()):
            raise ClientError(
                {"Error": {"Code": "DeleteConflict", "Message": "policy is attached"}},
                "DeletePolicy",
            )
        for version in state["versions"]:
            if not version["default"]:
                self.iam.delete_policy_version(PolicyArn=arn, VersionId=version["id"])
        return self._gone_is_done(lambda: self.iam.delete_policy(PolicyArn=arn))

    def _op_attach(self, kind: str, principal: str, arn: str, **_: Any) -> dict[str, Any]:
        if kind == "role":
            self.iam.attach_role_policy(RoleName=principal, PolicyArn=arn)
        else:
            self.iam.attach_user_policy(UserName=principal, PolicyArn=arn)
        return {}

    def _op_detach(self, kind: str, principal: str, arn: str, **_: Any) -> dict[str, Any]:
        if kind == "role":
            return self._gone_is_done(
                lambda: self.iam.detach_role_policy(RoleName=principal, PolicyArn=arn)
            )
        return self._gone_is_done(
            lambda: self.iam.detach_user_policy(UserName=principal, PolicyArn=arn)
        )

    def _op_create_version(
        self, arn: str, doc: dict[str, Any], default: bool = True, **_: Any
    ) -> dict[str, Any]:
        wanted = canonical(doc)
        for item in self._pages("list_policy_versions", "Versions", PolicyArn=arn):
            full = self.iam.get_policy_version(PolicyArn=arn, VersionId=item["VersionId"])
            if canonical(policy_document(full["PolicyVersion"]["Document"])) == wanted:
                # Made before a crash (or the same text already there): reuse it.
                if default and not item.get("IsDefaultVersion"):
                    self.iam.set_default_policy_version(PolicyArn=arn, VersionId=item["VersionId"])
                return {"version": item["VersionId"], "already": True}
        created = self.iam.create_policy_version(
            PolicyArn=arn, PolicyDocument=json.dumps(doc), SetAsDefault=default
        )
        return {"version": created["PolicyVersion"]["VersionId"]}

    def _op_set_default(self, arn: str, version: str, **_: Any) -> dict[str, Any]:
        self.iam.set_default_policy_version(PolicyArn=arn, VersionId=version)
        return {}

    def _op_delete_version(self, arn: str, version: str, **_: Any) -> dict[str, Any]:
        return self._gone_is_done(
            lambda: self.iam.delete_policy_version(PolicyArn=arn, VersionId=version)
        )

    def _op_key_status(self, principal: str, key: str, status: str, **_: Any) -> dict[str, Any]:
        self.iam.update_access_key(UserName=principal, AccessKeyId=key, Status=status)
        return {}

    def _op_delete_key(self, principal: str, key: str, **_: Any) -> dict[str, Any]:
        return self._gone_is_done(
            lambda: self.iam.delete_access_key(UserName=principal, AccessKeyId=key)
        )

    def _op_delete_login_profile(self, principal: str, **_: Any) -> dict[str, Any]:
        return self._gone_is_done(lambda: self.iam.delete_login_profile(UserName=principal))

    def _op_create_login_profile(self, principal: str, **_: Any) -> dict[str, Any]:
        try:
            self.iam.create_login_profile(
                UserName=principal, Password=random_password(), PasswordResetRequired=True
            )
        except ClientError as exc:
            if error_code(exc) != "EntityAlreadyExists":
                raise
            return {"already": True}
        return {}

    def _op_tag_role(self, principal: str, tags: dict[str, str], **_: Any) -> dict[str, Any]:
        self.iam.tag_role(
            RoleName=principal, Tags=[{"Key": k, "Value": v} for k, v in tags.items()]
        )
        return {}

    def _op_untag_role(self, principal: str, keys: list[str], **_: Any) -> dict[str, Any]:
        self.iam.untag_role(RoleName=principal, TagKeys=keys)
        return {}

    def _op_delete_role(self, principal: str, **_: Any) -> dict[str, Any]:
        try:
            self.iam.get_role(RoleName=principal)
        except ClientError as exc:
            if error_code(exc) != "NoSuchEntity":
                raise
            # Deleted before a crash: the step is done.
            return {"already": True}
        profiles = self._pages(
            "list_instance_profiles_for_role", "InstanceProfiles", RoleName=principal
        )
        attached = self._pages(
            "list_attached_role_policies", "AttachedPolicies", RoleName=principal
        )
        inline = self._pages("list_role_policies", "PolicyNames", RoleName=principal)
        # A role still in an instance profile or holding policies is in use or not emptied;
        # the earlier steps empty it, so anything left here was added by someone since.
        if profiles or attached or inline:
            raise ClientError(
                {"Error": {"Code": "DeleteConflict", "Message": "role still has dependencies"}},
                "DeleteRole",
            )
        return self._gone_is_done(lambda: self.iam.delete_role(RoleName=principal))

    def _op_create_role(
        self,
        principal: str,
        path: str,
        trust: dict[str, Any],
        tags: dict[str, str],
        description: str | None = None,
        max_session: int | None = None,
        **_: Any,
    ) -> dict[str, Any]:
        params: dict[str, Any] = {
            "RoleName": principal,
            "Path": path,
            "AssumeRolePolicyDocument": json.dumps(trust),
            "Tags": [{"Key": k, "Value": v} for k, v in tags.items()],
        }
        if description:
            params["Description"] = description
        if max_session:
            params["MaxSessionDuration"] = max_session
        try:
            self.iam.create_role(**params)
        except ClientError as exc:
            if error_code(exc) != "EntityAlreadyExists":
                raise
            return {"already": True}
        return {}


def validation_errors(analyzer: Any, doc: dict[str, Any]) -> list[str]:
    """Return what Access Analyzer's ValidatePolicy calls errors in an identity policy."""
    out: list[str] = []
    try:
        pages = analyzer.get_paginator("validate_policy").paginate(
            policyDocument=json.dumps(doc), policyType="IDENTITY_POLICY"
        )
        for page in pages:
            for finding in page.get("findings") or []:
                if finding.get("findingType") == "ERROR":
                    out.append(f"{finding.get('issueCode')}: {finding.get('findingDetails')}")
    except (ClientError, BotoCoreError) as exc:
        # A document that could not be checked is not applied: fail closed.
        out.append(f"ValidatePolicy failed: {error_code(exc)}")
    return out
