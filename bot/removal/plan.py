"""Plan a change as a list of AWS calls, from the principal's before-state, before any call.

Every step alone leaves the principal with at least what was approved to remain: a trimmed
document replaces the old in one call, a new default version switches in one call, and a copy
is created and attached before the original is detached. IAM limits are checked here, so a
change that cannot fit is compacted or refused before AWS is asked.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.catalog import Catalogue
from bot.removal import policy as P

QUARANTINE_POLICY = "PareQuarantine"
QUARANTINE_TAG = "pare:quarantined"
# AWS's own deny-everything managed policy, used when the role has no inline room left.
AWS_DENY_ALL = "arn:aws:iam::aws:policy/AWSDenyAll"
COPY_PATH = "/pare/"
MAX_POLICY_NAME = 128
_NAME_CHARS = re.compile(r"[^\w+=,.@-]")


@dataclass
class Step:
    """One AWS call to make, with everything needed to make it again or reverse it."""

    op: str
    params: dict[str, Any]


@dataclass
class Plan:
    """What a change will do; refused says why it cannot, before any call."""

    steps: list[Step] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept: list[dict[str, str]] = field(default_factory=list)
    refused: str | None = None

    def keep(self, what: str, why: str) -> None:
        """Record something approved that this change leaves in place, and why."""
        self.kept.append({"what": what, "why": why})


Agreement = Callable[[str, set[str]], bool]


def copy_name(original: str, change_id: int) -> str:
    """Return the name of a principal's trimmed copy of a managed policy."""
    suffix = f"-pare{change_id}"
    base = _NAME_CHARS.sub("-", original)[: MAX_POLICY_NAME - len(suffix)]
    return base + suffix


def _default_doc(pstate: dict[str, Any]) -> dict[str, Any]:
    return next(v["doc"] for v in pstate["versions"] if v["default"])


def _version_room(arn: str, pstate: dict[str, Any]) -> list[Step]:
    """Return the step that frees a version slot, if the policy has IAM's five already."""
    versions = pstate["versions"]
    if len(versions) < P.MAX_POLICY_VERSIONS:
        return []
    spare = [v for v in versions if not v["default"]]
    oldest = min(spare, key=lambda v: (v.get("created") or "", v["id"]))
    # The deleted version's document is kept in the step, so the record keeps it.
    return [Step("delete_version", {"arn": arn, "version": oldest["id"], "doc": oldest["doc"]})]


def _fit(
    doc: dict[str, Any] | None, limit: int, removed: set[str], cat: Catalogue
) -> dict[str, Any] | None | bool:
    if doc is None or P.size(doc) <= limit:
        return doc
    smaller = P.compact(doc, removed, cat)
    return smaller if P.size(smaller) <= limit else False


def plan_trim(
    state: dict[str, Any],
    remove: set[str],
    cat: Catalogue,
    change_id: int,
    agree: Agreement,
    recommended: dict[str, dict[str, Any]] | None = None,
) -> Plan:
    """Plan dropping the approved actions from every policy of the principal that grants them."""
    plan = Plan()
    kind, name = state["kind"], state["name"]
    who = {"kind": kind, "principal": name}

    through_groups = set()
    for group, gstate in sorted(state.get("groups", {}).items()):
        docs = list(gstate["inline"].values()) + list(gstate["managed"].values())
        hit = remove & set().union(*(P.grants(d, cat) for d in docs)) if docs else set()
        if hit:
            through_groups |= hit
            names = sorted(cat.canonical(a) or a for a in hit)
            plan.keep(", ".join(names), f"granted through the group {group}")
    remove = remove - through_groups
    removed: set[str] = set()

    inline_after = dict(state["inline"])
    inline_steps: list[Step] = []
    for pname, doc in sorted(state["inline"].items()):
        new, hit = P.trim(doc, remove, cat)
        if not hit:
            continue
        removed |= hit
        inline_after[pname] = new
        if new is None:
            inline_steps.append(Step("delete_inline", {**who, "policy": pname, "previous": doc}))
        else:
            inline_steps.append(
                Step("put_inline", {**who, "policy": pname, "doc": new, "previous": doc})
            )
    limit = P.INLINE_LIMITS[kind]
    if sum(P.size(d) for d in inline_after.values()) > limit:
        for step in inline_steps:
            if step.op == "put_inline":
                step.params["doc"] = P.compact(step.params["doc"], remove, cat)
                inline_after[step.params["policy"]] = step.params["doc"]
        total = sum(P.size(d) for d in inline_after.values())
        if total > limit:
            plan.refused = (
                f"the trimmed inline policies of {name} would be {total} characters, over IAM's "
                f"{limit} for a {kind}, even compacted"
            )
            return plan

    managed_steps: list[Step] = []
    attached = len(state["managed"])
    for arn, pstate in sorted(state["managed"].items()):
        doc = _default_doc(pstate)
        before = P.grants(doc, cat)
        new, _ = P.trim(doc, remove, cat)
        rec = (recommended or {}).get(arn)
        if rec is not None:
            trimmed_rec, _ = P.trim(rec, remove, cat)
            # Access Analyzer's policy is used only if it removes nothing that was not approved.
            if before - P.grants(trimmed_rec, cat) <= remove and trimmed_rec is not None:
                new = trimmed_rec
        hit = before - P.grants(new, cat)
        if not hit:
            continue
        fitted = _fit(new, P.MANAGED_POLICY_LIMIT, remove, cat)
        if fitted is False:
            plan.refused = (
                f"the trimmed copy of {pstate['name']} would be over IAM's "
                f"{P.MANAGED_POLICY_LIMIT} characters for a managed policy, even compacted"
            )
            return plan
        new = fitted
        removed |= hit
        others = {
            k: [n for n in v if not (k == f"{kind}s" and n == name)]
            for k, v in pstate["attached_to"].items()
        }
        shared = any(others.values())
        if new is None:
            # Nothing of it is to remain for this principal: detaching is the whole change.
            managed_steps.append(Step("detach", {**who, "arn": arn}))
            continue
        if not pstate["aws_managed"] and (not shared or agree(arn, hit)):
            managed_steps += _version_room(arn, pstate)
            managed_steps.append(
                Step(
                    "create_version",
                    {"arn": arn, "doc": new, "previous": pstate["default_version"]},
                )
            )
            continue
        if attached + 1 > P.MAX_MANAGED_PER_PRINCIPAL:
            plan.refused = (
                f"{name} already has {attached} managed policies, IAM's limit; its trimmed copy "
                f"of {pstate['name']} cannot be attached before the original is detached"
            )
            return plan
        attached += 1
        copy = copy_name(pstate["name"], change_id)
        copy_arn = f"arn:aws:iam::{state['account_id']}:policy{COPY_PATH}{copy}"
        description = f"Pare: {pstate['name']} trimmed for {name}"[:1000]
        managed_steps += [
            Step(
                "create_policy",
                {"name": copy, "path": COPY_PATH, "doc": new, "description": description},
            ),
            Step("attach", {**who, "arn": copy_arn, "copy_of": arn}),
            Step("detach", {**who, "arn": arn}),
        ]

    plan.steps = managed_steps + inline_steps
    plan.removed = sorted(cat.canonical(a) or a for a in removed)
    for action in sorted(remove - removed):
        plan.keep(cat.canonical(action) or action, "no policy of the principal grants it any more")
    return plan


def plan_key(state: dict[str, Any], key: str) -> Plan:
    """Plan deactivating an access key."""
    plan = Plan()
    status = state.get("access_keys", {}).get(key)
    if status is None:
        plan.keep(key, "the key no longer exists")
    elif status != "Active":
        plan.keep(key, "the key is already inactive")
    else:
        params = {"principal": state["name"], "key": key, "status": "Inactive"}
        plan.steps = [Step("key_status", {**params, "previous": "Active"})]
        plan.removed = [key]
    return plan


def plan_key_deletion(state: dict[str, Any], key: str) -> Plan:
    """Plan deleting an access key that was deactivated a grace period ago."""
    plan = Plan()
    status = state.get("access_keys", {}).get(key)
    if status is None:
        plan.keep(key, "the key no longer exists")
    elif status == "Active":
        plan.keep(key, "the key was activated again since Pare deactivated it")
    else:
        plan.steps = [Step("delete_key", {"principal": state["name"], "key": key})]
        plan.removed = [key]
    return plan


def plan_password(state: dict[str, Any]) -> Plan:
    """Plan deleting a user's login profile."""
    plan = Plan()
    if not state.get("login_profile"):
        plan.keep("console password", "the user has no console password any more")
    else:
        plan.steps = [Step("delete_login_profile", {"principal": state["name"]})]
        plan.removed = ["console password"]
    return plan


def plan_quarantine(state: dict[str, Any], now: datetime) -> Plan:
    """Plan quarantining a role: deny everything inline (or through AWSDenyAll), and tag it."""
    plan = Plan()
    name = state["name"]
    who = {"kind": "role", "principal": name}
    tags = state.get("tags", {})
    tag = {QUARANTINE_TAG: now.date().isoformat()}
    previous = {QUARANTINE_TAG: tags[QUARANTINE_TAG]} if QUARANTINE_TAG in tags else {}
    room = P.INLINE_LIMITS["role"] - sum(P.size(d) for d in state["inline"].values())
    if P.size(P.deny_all()) <= room:
        deny = Step(
            "put_inline",
            {
                **who,
                "policy": QUARANTINE_POLICY,
                "doc": P.deny_all(),
                "previous": state["inline"].get(QUARANTINE_POLICY),
            },
        )
    elif len(state["managed"]) < P.MAX_MANAGED_PER_PRINCIPAL:
        deny = Step("attach", {**who, "arn": AWS_DENY_ALL})
    else:
        plan.refused = (
            f"{name} has no room for a deny-all: its inline policies are at IAM's size limit "
            f"and it has {len(state['managed'])} managed policies"
        )
        return plan
    plan.steps = [
        Step("tag_role", {"principal": name, "tags": tag, "previous": previous}),
        deny,
    ]
    plan.removed = ["role (quarantined)"]
    return plan


def plan_role_deletion(state: dict[str, Any]) -> Plan:
    """Plan deleting a quarantined role: empty it, then delete it, keeping all to recreate it."""
    plan = Plan()
    name = state["name"]
    who = {"kind": "role", "principal": name}
    if state.get("instance_profiles"):
        plan.refused = (
            f"{name} is in the instance profile(s) {', '.join(state['instance_profiles'])}; "
            "it may be in use through them, so it is not deleted"
        )
        return plan
    quarantined = QUARANTINE_POLICY in state["inline"] or AWS_DENY_ALL in state["managed"]
    if not quarantined or QUARANTINE_TAG not in state.get("tags", {}):
        plan.keep(name, "the quarantine was lifted since, so the role is kept")
        return plan
    for pname, doc in sorted(state["inline"].items()):
        plan.steps.append(Step("delete_inline", {**who, "policy": pname, "previous": doc}))
    for arn in sorted(state["managed"]):
        plan.steps.append(Step("detach", {**who, "arn": arn}))
    role = state["role"]
    plan.steps.append(
        Step(
            "delete_role",
            {
                "principal": name,
                "path": role["path"],
                "trust": role["trust"],
                "tags": state.get("tags", {}),
                "description": role.get("description"),
                "max_session": role.get("max_session"),
            },
        )
    )
    plan.removed = ["role"]
    return plan


def inverse(step: Step, result: dict[str, Any]) -> list[Step]:
    """Return the calls that reverse one done step (empty when it cannot be reversed)."""
    p = step.params
    who = {k: p[k] for k in ("kind", "principal") if k in p}
    if step.op in ("put_inline", "delete_inline"):
        if p.get("previous") is None:
            return [Step("delete_inline", {**who, "policy": p["policy"]})]
        return [Step("put_inline", {**who, "policy": p["policy"], "doc": p["previous"]})]
    if step.op == "create_policy":
        return [Step("delete_policy", {"arn": result["arn"]})] if result.get("arn") else []
    if step.op == "attach":
        return [Step("detach", {**who, "arn": p["arn"]})]
    if step.op == "detach":
        return [Step("attach", {**who, "arn": p["arn"]})]
    if step.op == "create_version":
        back = [Step("set_default", {"arn": p["arn"], "version": p["previous"]})]
        if result.get("version") and not result.get("already"):
            back.append(Step("delete_version", {"arn": p["arn"], "version": result["version"]}))
        return back
    if step.op == "set_default":
        return [Step("set_default", {"arn": p["arn"], "version": p["previous"]})]
    if step.op == "delete_version":
        return [Step("create_version", {"arn": p["arn"], "doc": p["doc"], "default": False})]
    if step.op == "key_status":
        return [Step("key_status", {**p, "status": p["previous"], "previous": p["status"]})]
    if step.op == "delete_login_profile":
        return [Step("create_login_profile", {"principal": p["principal"]})]
    if step.op == "create_login_profile":
        return [Step("delete_login_profile", {"principal": p["principal"]})]
    if step.op == "tag_role":
        back = []
        added = [k for k in p["tags"] if k not in p.get("previous", {})]
        if added:
            back.append(Step("untag_role", {"principal": p["principal"], "keys": added}))
        if p.get("previous"):
            back.append(Step("tag_role", {"principal": p["principal"], "tags": p["previous"]}))
        return back
    if step.op == "delete_role":
        return [Step("create_role", dict(p))]
    if step.op == "create_role":
        return [Step("delete_role", {"principal": p["principal"]})]
    # delete_key and delete_policy cannot be reversed: a key's secret is gone for good.
    return []
