"""Run Alembic migrations programmatically, with the URL from settings."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations

SCRIPT_LOCATION = Path(migrations.__file__).parent


def alembic_config(url: str) -> Config:
    """Build an Alembic config for the packaged migrations and this database URL."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    # Alembic's ini interpolation treats % specially; passwords may contain it.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the schema to revision."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Downgrade the schema to revision."""
    command.downgrade(alembic_config(url), revision)


def current(url: str) -> str | None:
    """Return the schema's current revision, or None for an empty database."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(url)
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
