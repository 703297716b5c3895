"""The Slack Web API client, built from settings, with Slack's rate-limit advice followed."""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
from collections.abc import Callable
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from bot.settings import Settings

log = logging.getLogger(__name__)

Sleep = Callable[[float], None]

# A 429 means Slack did not act, so waiting Retry-After and sending again cannot double-post.
# 5xx and dropped connections are not retried here: Slack may have posted before failing, and
# the digest's own recovery (find the post by its metadata) decides whether to send again.
RATE_LIMIT_RETRIES = 5
# Longer waits than this are left to the scheduler's next attempt instead of holding a worker.
MAX_RETRY_AFTER_SECONDS = 60
TIMEOUT_SECONDS = 15
# Slack allows about one message per second per channel.
CHANNEL_INTERVAL_SECONDS = 1.0

# What an operator must do about errors that retrying alone will not fix.
OPERATOR_HINTS = {
    "channel_not_found": "the channel id in the teams file does not exist or is private",
    "not_in_channel": "invite the Pare app to the channel (/invite @Pare)",
    "is_archived": "the channel is archived; give the team a live channel",
    "invalid_auth": "SLACK_BOT_TOKEN is wrong or from another workspace",
    "account_inactive": "the bot token belongs to a deactivated app or workspace",
    "token_revoked": "the bot token was revoked; reinstall Pare and set the new token",
    "not_authed": "SLACK_BOT_TOKEN is missing",
    "missing_scope": "the app lacks a scope; reinstall it from the manifest",
}


class RetryAfterHandler(RetryHandler):
    """Wait Retry-After on a 429 and send again; sleep is injectable so tests do not wait."""

    def __init__(self, max_retry_count: int = RATE_LIMIT_RETRIES, sleep: Sleep = time.sleep):
        super().__init__(max_retry_count=max_retry_count)
        self.sleep = sleep

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        return retry_after(response.headers) <= MAX_RETRY_AFTER_SECONDS

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        wait = retry_after(response.headers if response is not None else {})
        log.info("Slack rate limit: waiting %ss as Retry-After asks", wait)
        self.sleep(wait)
        state.next_attempt_requested = True
        state.increment_current_attempt()


def retry_after(headers: dict[str, Any]) -> float:
    """Return the Retry-After seconds of a 429 (1 if Slack gave none)."""
    for name, value in headers.items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, list | tuple) else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return 1.0
    return 1.0


def make_client(
    settings: Settings, token: str | None = None, sleep: Sleep = time.sleep
) -> WebClient:
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
        retry_handlers=[RetryAfterHandler(sleep=sleep)],
        **kwargs,  # type: ignore[arg-type]
    )


def error_code(exc: BaseException) -> str:
    """Return Slack's error code, or the HTTP status or exception name when there is none."""
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error") or f"http_{exc.response.status_code}")
    return type(exc).__name__


def transient(exc: BaseException) -> bool:
    """Say whether a failed call may have reached Slack and is worth retrying soon."""
    if isinstance(exc, SlackApiError):
        return int(exc.response.status_code or 0) >= 500 or exc.response.get("error") in (
            "internal_error",
            "fatal_error",
            "service_unavailable",
            "request_timeout",
        )
    return isinstance(exc, urllib.error.URLError | ConnectionError | TimeoutError | OSError)


class ChannelPacer:
    """Space posts to one channel at least `interval` apart, across this process's threads."""

    def __init__(
        self,
        interval: float = CHANNEL_INTERVAL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = time.sleep,
    ):
        self.interval = interval
        self.clock = clock
        self.sleep = sleep
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, channel: str) -> None:
        """Block until this channel may take another message, and book the slot."""
        with self._lock:
            now = self.clock()
            slot = max(now, self._next.get(channel, now))
            self._next[channel] = slot + self.interval
        if slot > now:
            self.sleep(slot - now)

    def posted(self, channel: str) -> None:
        """Note that a post just landed: a late one (after a 429 wait) pushes the next slot."""
        with self._lock:
            self._next[channel] = max(self._next.get(channel, 0.0), self.clock() + self.interval)


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
        log.warning("could not look for an earlier post in %s: %s", channel, error_code(exc))
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
