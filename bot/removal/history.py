"""A principal's whole story: findings, decisions, changes and undos, in time order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from bot.db import Database
from bot.errors import PareError
from models import Change, ChangeEvent, Finding, Principal


def history(db: Database, principal_arn: str) -> list[dict[str, Any]]:
    """Return every event of a principal, oldest first, as plain dicts (JSON-ready)."""
    with db.session() as session:
        principal = session.scalar(select(Principal).where(Principal.arn == principal_arn))
        if principal is None:
            raise PareError(f"no principal {principal_arn} has been scanned")
        events: list[dict[str, Any]] = []
        findings = session.scalars(select(Finding).where(Finding.principal_id == principal.id))
        for f in findings:
            what = {"finding_id": f.id, "kind": f.kind, "service": f.service, "status": f.status}
            what |= {"actions": f.actions, "resource_id": f.resource_id}
            events.append({"at": f.first_seen_at, "type": "finding_opened", **what})
            if f.closed_at:
                events.append(
                    {
                        "at": f.closed_at,
                        "type": "finding_closed",
                        "finding_id": f.id,
                        "reason": f.closed_reason,
                    }
                )
            for d in f.decisions:
                events.append(
                    {
                        "at": d.decided_at,
                        "type": "decision",
                        "decision_id": d.id,
                        "finding_id": f.id,
                        "decision": d.kind,
                        "by": d.decided_by,
                        "round": d.round,
                        "approved": d.frozen.get("actions") if d.kind == "approve" else None,
                    }
                )
        changes = {
            c.id: c
            for c in session.scalars(select(Change).where(Change.principal_id == principal.id))
        }
        if changes:
            rows = session.scalars(
                select(ChangeEvent).where(ChangeEvent.change_id.in_(list(changes)))
            )
            for e in rows:
                c = changes[e.change_id]
                events.append(
                    {
                        "at": e.at,
                        "type": "undo" if c.kind == "undo" else "change",
                        "change_id": c.id,
                        "kind": c.kind,
                        "mode": c.mode,
                        "status": e.status,
                        "step": e.step,
                        "of": c.steps,
                        "undoes": c.parent_id if c.kind == "undo" else None,
                        "decision_id": c.decision_id,
                        "removed": c.removed if e.status in ("applied", "dry_run") else None,
                        "detail": e.detail,
                    }
                )
    order = {"finding_opened": 0, "decision": 1, "change": 2, "undo": 3, "finding_closed": 4}
    events.sort(key=lambda e: (e["at"], order[e["type"]], e.get("change_id") or 0))
    for e in events:
        e["at"] = e["at"].isoformat()
    return events


def render(events: list[dict[str, Any]]) -> str:
    """Return the history as readable lines."""
    lines = []
    for e in events:
        kind = e["type"]
        if kind == "finding_opened":
            what = e["service"] or e["resource_id"] or ""
            text = f"finding {e['finding_id']} opened: {e['kind']} {what} ({e['status']})"
        elif kind == "finding_closed":
            text = f"finding {e['finding_id']} closed: {e['reason']}"
        elif kind == "decision":
            text = f"decision {e['decision_id']}: {e['decision']} by {e['by']}"
        else:
            label = (
                f"undo {e['change_id']} of change {e['undoes']}"
                if kind == "undo"
                else (f"change {e['change_id']} {e['kind']}")
            )
            step = f" step {e['step']}/{e['of']}" if e["status"] == "applying" else ""
            text = f"{label}: {e['status']}{step} ({e['mode']})"
            if e.get("removed"):
                verb = "restored" if e.get("kind") == "undo" else "removed"
                text += f" {verb} {', '.join(e['removed'])}"
            if e.get("detail") and e["status"] != "applying":
                text += f": {e['detail']}"
        lines.append(f"{e['at']}  {text}")
    return "\n".join(lines) or "no history"
