"""Data and revision generators for the benchmarks (run by bench/run.py, usable alone)."""

from __future__ import annotations

import shutil
from pathlib import Path

# About one million rows across the seven tables, with non-ASCII text and nested JSONB.
GENERATE_ROWS = """
INSERT INTO sessions (user_id, project_name, current_stage, status, metadata, email)
SELECT 'user-' || g, 'Projekt Grüße 数据 #' || g, 1 + g % 5,
       (ARRAY['in_progress', 'completed', 'abandoned'])[1 + g % 3],
       jsonb_build_object('ui', 'web', 'n', g, 'tags', jsonb_build_array('a', 'ü', g)),
       'user' || g || '@example.org'
FROM generate_series(1, %(sessions)s) AS g;

INSERT INTO stage_data (session_id, stage_number, field_name, field_value)
SELECT s.session_id, 1 + f % 5, 'field_' || f,
       jsonb_build_object('answer', 'Antwort ✓ ' || f, 'items', jsonb_build_array(f, f * 2))
FROM sessions AS s CROSS JOIN generate_series(1, 6) AS f;

INSERT INTO conversation_history (session_id, stage_number, role, content, metadata)
SELECT s.session_id, 1 + m % 5, (ARRAY['user', 'assistant'])[1 + m % 2],
       'Message ' || m || ': what data do you have? データ', jsonb_build_object('tokens', m)
FROM sessions AS s CROSS JOIN generate_series(1, 6) AS m;

INSERT INTO checkpoints (session_id, stage_number, checkpoint_data)
SELECT s.session_id, 1 + c % 5, jsonb_build_object('state', repeat('x', 40), 'c', c)
FROM sessions AS s CROSS JOIN generate_series(1, 2) AS c;

INSERT INTO quality_metrics (session_id, stage_number, field_name, quality_score, issues)
SELECT s.session_id, 1 + q % 5, 'field_' || q, q % 11, jsonb_build_array('vague')
FROM sessions AS s CROSS JOIN generate_series(1, 3) AS q;

INSERT INTO project_charters (session_id, charter_data, governance_decision, feasibility_level)
SELECT s.session_id, jsonb_build_object('title', s.project_name), 'proceed', 'medium'
FROM sessions AS s WHERE s.status = 'completed';

INSERT INTO consistency_reports (session_id, is_consistent, overall_feasibility)
SELECT s.session_id, true, 'high' FROM sessions AS s WHERE s.status <> 'abandoned';
"""


def rows_for(total: int) -> int:
    """Sessions needed for about `total` rows (each session brings about 19 rows)."""
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
