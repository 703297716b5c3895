"""Schema history: upgrade, downgrade and upgrade again, and the result matches the models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from bot.migrate import alembic_config, current, downgrade, upgrade
from models import Base

# Tables Alembic itself keeps.
OWN = {"alembic_version"}


def head() -> str:
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head() or ""


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - OWN
    finally:
        engine.dispose()


def differences(url: str) -> list[object]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()


def test_upgrade_downgrade_and_upgrade_again(database_url):
    assert current(database_url) is None

    upgrade(database_url)
    assert current(database_url) == head()
    assert tables(database_url) == set(Base.metadata.tables)

    downgrade(database_url, "base")
    assert current(database_url) is None
    assert tables(database_url) == set()

    upgrade(database_url)
    assert current(database_url) == head()
    assert tables(database_url) == set(Base.metadata.tables)


def test_the_migrated_schema_matches_the_models(database_url):
    upgrade(database_url)

    assert differences(database_url) == []


def test_every_revision_steps_down_and_back_up(database_url):
    revisions = list(ScriptDirectory.from_config(alembic_config(database_url)).walk_revisions())
    upgrade(database_url)

    # Walk down one revision at a time, then all the way up again.
    for _ in revisions:
        downgrade(database_url, "-1")
    assert current(database_url) is None
    for revision in reversed(revisions):
        upgrade(database_url, revision.revision)
        assert current(database_url) == revision.revision
    assert differences(database_url) == []
