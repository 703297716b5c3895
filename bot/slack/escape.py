"""Escaping for Slack mrkdwn: text from AWS or users must never format, link or notify."""

from __future__ import annotations

ELLIPSIS = "…"


def escape(text: object) -> str:
    """Escape &, < and > so Slack shows the text literally."""
    value = "" if text is None else str(text)
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    """Cut plain text to at most limit characters, marking the cut."""
    if len(text) <= limit:
        return text
    return text[: limit - len(ELLIPSIS)] + ELLIPSIS


def clip_escaped(text: str, limit: int) -> str:
    """Cut already-escaped mrkdwn to limit characters without splitting an entity like &amp;."""
    if len(text) <= limit:
        return text
    cut = text[: limit - len(ELLIPSIS)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + ELLIPSIS
