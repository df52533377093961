"""Data and revision generators for the benchmarks (run by bench/run.py, usable alone)."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg

from uaip_db.checks import sample_data
from uaip_db.settings import DatabaseConfig


def generate_rows(database: DatabaseConfig, total: int) -> None:
    """About `total` rows across every table at the database's revision, from its catalog:
    non-ASCII text, nested JSONB, three rows per referenced row (sample_data.fill_many)."""
    with psycopg.connect(**database.connect_kwargs(), autocommit=True) as conn:
        unfilled = sample_data.fill_many(conn, rows_for(total), per_parent=3)
        if unfilled:
            raise SystemExit(f"could not fill {', '.join(unfilled)}")


def rows_for(total: int) -> int:
    """Rows per root table for about `total` rows (each brings 1 + 6 tables x 3 = 19)."""
    return max(1, total // 19)


def write_revisions(checkout: Path, source: Path, count: int) -> None:
    """A copy of the repository's migrations with `count` generated revisions on top of head."""
    shutil.copy(source / "alembic.ini", checkout / "alembic.ini")
    shutil.copytree(source / "migrations", checkout / "migrations")
    shutil.copytree(source / "database", checkout / "database")
    versions = checkout / "migrations" / "versions"
    scripts = sorted(versions.glob("*.py"))
    previous = _head_of(scripts)
    for number in range(1, count + 1):
        revision = f"be{number:010d}"
        (versions / f"9999_{revision}_bench.py").write_text(
            f'''"""Benchmark revision {number}"""
from alembic import op

revision = "{revision}"
down_revision = "{previous}"
branch_labels = None
depends_on = None
destroys_data_on_downgrade = "checkpoints.bench_{number}"


def upgrade() -> None:
    op.execute("ALTER TABLE checkpoints ADD COLUMN bench_{number} integer")


def downgrade() -> None:
    op.execute("ALTER TABLE checkpoints DROP COLUMN bench_{number}")
'''
        )
        previous = revision


def _head_of(scripts: list[Path]) -> str:
    import re

    revisions, downs = set(), set()
    for script in scripts:
        text = script.read_text()
        found = re.search(r'^revision(?:: str)? = "(\w+)"', text, re.M)
        down = re.search(r'^down_revision[^=]*= "(\w+)"', text, re.M)
        if found:
            revisions.add(found.group(1))
        if down:
            downs.add(down.group(1))
    (head,) = revisions - downs
    return head
