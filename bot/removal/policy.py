"""Policy documents: drop approved actions, keep everything else, fit IAM's size limits.

Conditions, resources, Deny statements and Sids are kept as written. An Allow whose wildcard
covers both kept and removed actions is expanded with the catalogue into the kept actions; a
statement allowing `*` becomes a NotAction of the removed ones, which grants exactly the rest.
"""

from __future__ import annotations

import copy
import json
import re
from collections import defaultdict
from typing import Any

from bot.analysis import granted_actions
from bot.catalog import Catalogue
from bot.domain import Policy

# IAM quotas (AWS documents these per account; whitespace does not count toward sizes).
INLINE_LIMITS = {"role": 10_240, "user": 2_048, "group": 5_120}
MANAGED_POLICY_LIMIT = 6_144
MAX_POLICY_VERSIONS = 5
MAX_MANAGED_PER_PRINCIPAL = 10

VERSION = "2012-10-17"
_WHITESPACE = re.compile(r"\s+")
_VERB = re.compile(r"^[A-Z][a-z]+")

Document = dict[str, Any]


def size(doc: Document | None) -> int:
    """Return a document's size as IAM counts it: without whitespace."""
    if doc is None:
        return 0
    return len(_WHITESPACE.sub("", json.dumps(doc, separators=(",", ":"))))


def _as_list(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def statements(doc: Document | None) -> list[dict[str, Any]]:
    """Return a document's statements as a list."""
    if not doc:
        return []
    found = doc.get("Statement", [])
    if isinstance(found, dict):
        return [found]
    return [s for s in found if isinstance(s, dict)]


def _with(doc: Document | None, stmts: list[dict[str, Any]]) -> Document | None:
    if not stmts:
        return None
    out = {k: v for k, v in (doc or {}).items() if k != "Statement"}
    out.setdefault("Version", VERSION)
    out["Statement"] = stmts
    return out


def canonical_equal(a: Document | None, b: Document | None) -> bool:
    """Return whether two documents say the same (key order and spacing aside)."""
    if a is None or b is None:
        return a is b
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def grants(doc: Document | None, cat: Catalogue) -> set[str]:
    """Return the lowercased actions a document's Allow statements grant."""
    if not doc:
        return set()
    return set(granted_actions([Policy(name="-", document=doc, origin="inline")], cat))


def _lower(actions: set[str] | frozenset[str]) -> set[str]:
    return {a.lower() for a in actions}


def _name(action: str, cat: Catalogue) -> str:
    return cat.canonical(action) or action


def _trim_statement(
    st: dict[str, Any], remove: set[str], cat: Catalogue
) -> tuple[dict[str, Any] | None, set[str]]:
    if st.get("Effect") != "Allow":
        return st, set()
    if "NotAction" in st:
        excluded = _lower(cat.expand_all(_as_list(st["NotAction"])))
        hit = {a for a in remove if cat.canonical(a) and a not in excluded}
        if not hit:
            return st, set()
        new = dict(st)
        new["NotAction"] = _as_list(st["NotAction"]) + sorted(_name(a, cat) for a in hit)
        return new, hit
    patterns = _as_list(st.get("Action"))
    if "*" in patterns:
        hit = set(remove)
        new = {k: v for k, v in st.items() if k != "Action"}
        new["NotAction"] = sorted(_name(a, cat) for a in hit)
        return new, hit
    kept: list[str] = []
    expanded: list[str] = []
    hit = set()
    for pattern in patterns:
        covers = cat.expand(pattern)
        here = {a for a in covers if a.lower() in remove}
        if not here:
            kept.append(pattern)
            continue
        hit |= _lower(here)
        expanded += sorted(a for a in covers if a.lower() not in remove)
    if not hit:
        return st, set()
    kept_cover = _lower(cat.expand_all(kept))
    for action in expanded:
        if action.lower() not in kept_cover and action not in kept:
            kept.append(action)
    if not kept:
        return None, hit
    new = dict(st)
    new["Action"] = kept if len(kept) > 1 else kept[0]
    return new, hit


def trim(doc: Document, remove: set[str], cat: Catalogue) -> tuple[Document | None, set[str]]:
    """Return the document without the removed actions (None if nothing is left), and what
    it actually removed (lowercased)."""
    out: list[dict[str, Any]] = []
    removed: set[str] = set()
    for st in statements(doc):
        new, hit = _trim_statement(st, remove, cat)
        removed |= hit
        if new is not None:
            out.append(new)
    return _with(doc, out), removed


def _wildcards(actions: list[str], removed: set[str], cat: Catalogue) -> list[str]:
    """Return actions with whole services or verbs folded back into wildcards where the
    wildcard grants nothing removed and nothing the list did not already grant."""
    granted = _lower(cat.expand_all(actions))
    by_service: dict[str, list[str]] = defaultdict(list)
    others: list[str] = []
    for action in actions:
        prefix, _, name = action.partition(":")
        if "*" in action or "?" in action or not name:
            others.append(action)
        else:
            by_service[prefix.lower()].append(action)
    out = list(others)
    for service, names in sorted(by_service.items()):
        candidates = [f"{service}:*"]
        verbs = sorted({m.group(0) for n in names if (m := _VERB.match(n.partition(":")[2]))})
        candidates += [f"{service}:{verb}*" for verb in verbs]
        left = set(names)
        for wildcard in candidates:
            cover = _lower(cat.expand(wildcard))
            members = {n for n in left if n.lower() in cover}
            if len(members) < 2 or cover & removed or not cover <= granted:
                continue
            out.append(wildcard)
            left -= members
        out += sorted(left)
    return out


def _merge_key(st: dict[str, Any]) -> str:
    rest = {k: v for k, v in st.items() if k not in ("Action", "Sid")}
    return json.dumps(rest, sort_keys=True)


def compact(doc: Document, removed: set[str], cat: Catalogue) -> Document:
    """Return an equivalent smaller document: wildcards re-used, alike statements merged."""
    merged: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    for st in statements(doc):
        if st.get("Effect") != "Allow" or "Action" not in st:
            key = f"keep:{len(order)}"
            merged[key] = st
            order.append(key)
            continue
        key = _merge_key(st)
        if key in merged:
            actions = _as_list(merged[key]["Action"]) + _as_list(st["Action"])
            merged[key] = {**merged[key], "Action": actions}
            merged[key].pop("Sid", None)
            continue
        merged[key] = dict(st)
        order.append(key)
    out = []
    for key in order:
        st = merged[key]
        if st.get("Effect") == "Allow" and "Action" in st:
            actions = _wildcards(list(dict.fromkeys(_as_list(st["Action"]))), removed, cat)
            st = {**st, "Action": actions if len(actions) > 1 else actions[0]}
        out.append(st)
    return _with(doc, out) or doc


def restore_statements(before: Document | None, actions: set[str], cat: Catalogue) -> list[Any]:
    """Return statements re-granting these actions as the before-document granted them
    (same resources and conditions), one per before-statement that granted any of them."""
    out = []
    for st in statements(before):
        if st.get("Effect") != "Allow":
            continue
        if "NotAction" in st:
            excluded = _lower(cat.expand_all(_as_list(st["NotAction"])))
            hit = {a for a in actions if a not in excluded}
        elif "*" in _as_list(st.get("Action")):
            hit = set(actions)
        else:
            hit = actions & _lower(cat.expand_all(_as_list(st.get("Action"))))
        if not hit:
            continue
        new = {k: v for k, v in st.items() if k not in ("Sid", "Action", "NotAction")}
        names = sorted(_name(a, cat) for a in hit)
        new["Action"] = names if len(names) > 1 else names[0]
        out.append(new)
    return out


def with_statements(doc: Document | None, extra: list[Any]) -> Document:
    """Return the document with extra statements appended (a new document if there was none)."""
    base = copy.deepcopy(doc) if doc else {"Version": VERSION, "Statement": []}
    return _with(base, statements(base) + extra) or base


def deny_all() -> Document:
    """Return the quarantine policy: deny every action on every resource."""
    return {
        "Version": VERSION,
        "Statement": [{"Sid": "PareQuarantine", "Effect": "Deny", "Action": "*", "Resource": "*"}],
    }
