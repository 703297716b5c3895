"""Settings from the environment (and a .env file), validated once at start."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.teams import TeamsConfig, load_teams

DEFAULT_DATABASE_URL = "sqlite:///pare.db"


def normalise_database_url(url: str) -> str:
    """Point SQLAlchemy at psycopg 3 for PostgreSQL URLs written the usual way."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Settings(BaseSettings):
    """Everything Pare reads from its environment; secrets stay SecretStr."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    slack_bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    slack_signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    slack_app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    # Only the local stand-in and tests change this; production talks to Slack's own API.
    slack_api_url: str | None = Field(default=None, alias="SLACK_API_URL")

    database_url: str = Field(default=DEFAULT_DATABASE_URL, alias="DATABASE_URL")
    teams_file: Path = Field(default=Path("teams.yaml"), alias="PARE_TEAMS_FILE")
    window_days: int = Field(default=90, ge=1, le=400, alias="PARE_WINDOW_DAYS")
    defer_days: int = Field(default=30, ge=1, le=365, alias="PARE_DEFER_DAYS")
    port: int = Field(default=3000, ge=1, le=65535, alias="PORT")
    log_json: bool = Field(default=False, alias="PARE_LOG_JSON")
    log_level: str = Field(default="INFO", alias="PARE_LOG_LEVEL")

    @field_validator("database_url")
    @classmethod
    def _normalise(cls, value: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        url = normalise_database_url(value.strip())
        try:
            backend = make_url(url).get_backend_name()
        except ArgumentError:
            backend = ""
        if backend not in {"sqlite", "postgresql"}:
            raise ValueError("must be sqlite:///FILE or postgresql://USER@HOST/DB")
        return url

    @field_validator("slack_signing_secret", "slack_bot_token", "slack_app_token")
    @classmethod
    def _reject_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip() in {"", "changeme", "xoxb-..."}:
            raise ValueError("is a placeholder; set the real value or leave it unset")
        return value

    @cached_property
    def teams(self) -> TeamsConfig:
        """The teams file, parsed and validated (raises ConfigError naming file and field)."""
        return load_teams(self.teams_file)

    def require_slack(self) -> tuple[str, str]:
        """Return the bot token and signing secret, or fail naming the missing variable."""
        from bot.errors import ConfigError

        if self.slack_bot_token is None:
            raise ConfigError("SLACK_BOT_TOKEN is not set")
        if self.slack_signing_secret is None:
            raise ConfigError("SLACK_SIGNING_SECRET is not set")
        return (
            self.slack_bot_token.get_secret_value(),
            self.slack_signing_secret.get_secret_value(),
        )
