"""The Slack Web API client, built from settings, with Slack's rate-limit advice followed."""

from __future__ import annotations

import logging

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

from bot.settings import Settings

log = logging.getLogger(__name__)

# A 429 means Slack did not act, so waiting Retry-After and sending again cannot double-post.
# 5xx and dropped connections are not retried here: Slack may have posted before failing, and
# the digest's own recovery (find the post by its metadata) decides whether to send again.
RATE_LIMIT_RETRIES = 5
TIMEOUT_SECONDS = 15


def make_client(settings: Settings, token: str | None = None) -> WebClient:
    """Return a WebClient for the bot token, aimed at settings.slack_api_url when set."""
    if token is None and settings.slack_bot_token is not None:
        token = settings.slack_bot_token.get_secret_value()
    kwargs: dict[str, object] = {}
    if settings.slack_api_url:
        base = settings.slack_api_url
        kwargs["base_url"] = base if base.endswith("/") else base + "/"
    return WebClient(
        token=token,
        timeout=TIMEOUT_SECONDS,
        retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=RATE_LIMIT_RETRIES)],
        **kwargs,  # type: ignore[arg-type]
    )


def find_posted(
    client: WebClient,
    channel: str,
    event_type: str,
    key: str,
    thread_ts: str | None = None,
) -> str | None:
    """Return the ts of a message Pare posted with this metadata key, if Slack has it."""
    try:
        if thread_ts:
            response = client.conversations_replies(
                channel=channel, ts=thread_ts, include_all_metadata=True, limit=200
            )
        else:
            response = client.conversations_history(
                channel=channel, include_all_metadata=True, limit=200
            )
    except SlackApiError as exc:
        log.warning(
            "could not look for an earlier post in %s: %s", channel, exc.response.get("error")
        )
        raise
    for message in response.get("messages", []):
        metadata = message.get("metadata") or {}
        payload = metadata.get("event_payload") or {}
        if metadata.get("event_type") == event_type and str(payload.get("key")) == key:
            return str(message["ts"])
    return None


def metadata(event_type: str, key: str) -> dict[str, object]:
    """Return message metadata that lets find_posted recognise a post later."""
    return {"event_type": event_type, "event_payload": {"key": key}}
