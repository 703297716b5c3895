"""Shared fixtures: a migrated database (SQLite, or PostgreSQL via PARE_TEST_DATABASE_URL)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from bot.db import Database
from bot.migrate import upgrade
from bot.settings import normalise_database_url

# Real inputs live beside the checkout (../shared/realdata); PARE_REALDATA points elsewhere.
REALDATA = Path(
    os.environ.get("PARE_REALDATA") or Path(__file__).resolve().parents[2] / "shared" / "realdata"
).resolve()


def _postgres_database(base_url: str) -> Iterator[str]:
    """Create a throwaway database on the server in base_url and drop it afterwards."""
    name = f"pare_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(base_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base_url.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database of the kind under test."""
    base = os.environ.get("PARE_TEST_DATABASE_URL")
    if base and not base.startswith("sqlite"):
        yield from _postgres_database(normalise_database_url(base))
    else:
        yield f"sqlite:///{tmp_path / 'pare-test.db'}"


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    """A migrated database."""
    upgrade(database_url)
    database = Database(database_url)
    yield database
    database.engine.dispose()


@pytest.fixture
def realdata() -> Path:
    """The folder of real inputs written by others."""
    if not REALDATA.exists():
        message = f"real inputs not found at {REALDATA} (set PARE_REALDATA)"
        # In CI a missing folder must fail: skipped tests would pass without testing anything.
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return REALDATA
