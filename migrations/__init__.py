"""Alembic migrations for Pare's schema; run with `pare db upgrade`."""
