"""The schema's future is not only additions: a column rename in two releases, the way
docs/MIGRATIONS.md section 4 ("Two releases live at once") says, on a scratch copy of the
checkout and a database of 200,000 sessions. Expand (a new column, the dual-write trigger, a
batched backfill), contract (the old column dropped, declared, with its reviewed lint
exception); every documented check, the round trip, the release check under writers, both ways
back as the report prints them, then `nox -s migrations` and the whole pytest on the copy.

A long walk (minutes): run once by `nox -s walks`, not by the plain `pytest`."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests.conftest import HEAD, sql
from tests.release.conftest import commit_all
from tests.test_next_migration import copy_checkout, in_copy, run_the_suite, step
from uaip_db.settings import DatabaseConfig

pytestmark = pytest.mark.walk

ROWS = 200_000
EXPAND_BODY = '''def upgrade() -> None:
    """Add title, the dual-write trigger that keeps it equal to project_name, and backfill it."""
    rename_column_expand(op, "sessions", "project_name", "title")
    op.execute("COMMENT ON COLUMN sessions.title IS 'The project name (was project_name).'")


def downgrade() -> None:
    """Drop the trigger, its function and title."""
    rename_column_expand_undo(op, "sessions", "project_name", "title")
'''
CONTRACT_BODY = '''def upgrade() -> None:
    """Drop the trigger, its function and project_name."""
    rename_column_contract(op, "sessions", "project_name", "title")


def downgrade() -> None:
    """Add project_name back with its comment, reinstall the trigger, refill it from title."""
    rename_column_contract_undo(op, "sessions", "project_name", "title")
    op.execute({comment!r})
'''


def write_revision(copy: Path, message: str, helpers: str, markers: str, body: str) -> Path:
    """`inv db.revision -m MESSAGE`, then what the developer writes into the new file."""
    written = step(copy, None, "inv", "db.revision", "-m", message)
    slug = re.sub(r"\W+", "_", message.lower()).strip("_")
    path = next((copy / "migrations" / "versions").glob(f"*_{slug}.py"))
    assert str(path) in written
    text = path.read_text()
    text = text[: text.index("def upgrade()")] + body
    text = text.replace("from alembic import op\n", f"from alembic import op\n\n{helpers}\n", 1)
    text = text.replace('phase = "expand"\n', markers + "\n", 1)
    path.write_text(text)
    step(copy, None, "ruff", "format", "--no-cache", str(path))
    return path


def revision_id(path: Path) -> str:
    found = re.search(r'^revision: str = "(\w+)"', path.read_text(), re.MULTILINE)
    assert found, path
    return found.group(1)


@pytest.fixture(scope="module")
def copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_checkout(tmp_path_factory.mktemp("rename") / "checkout")


def test_a_rename_in_two_releases_keeps_every_check_green(
    copy: Path, head_db: DatabaseConfig, tmp_path: Path
) -> None:
    db = head_db
    sql(
        db,
        "INSERT INTO sessions (user_id, project_name) SELECT 'user-' || n, 'Project ' || n "
        f"FROM generate_series(1, {ROWS}) AS n",
    )
    ((comment,),) = sql(
        db,
        "SELECT format('COMMENT ON COLUMN sessions.project_name IS %L', "
        "col_description('sessions'::regclass, attnum)) FROM pg_attribute "
        "WHERE attrelid = 'sessions'::regclass AND attname = 'project_name'",
    )
    commit_all(copy, "Release N")

    # Release N+1, expand: the new column, the trigger, the backfill (section 4, step 1).
    expand = write_revision(
        copy,
        "rename project_name to title expand",
        "from uaip_db.ops import rename_column_expand, rename_column_expand_undo",
        'phase = "expand"\ndestroys_data_on_downgrade = "sessions.title"',
        EXPAND_BODY,
    )
    step(copy, None, "inv", "db.snapshots")
    step(copy, None, "inv", "db.docs")
    step(copy, None, "inv", "db.lint")
    upgraded = step(copy, db, "inv", "db.upgrade")
    assert f"applied {revision_id(expand)}" in upgraded
    assert sql(db, "SELECT count(*) FROM sessions WHERE title IS DISTINCT FROM project_name") == [
        (0,)
    ]
    step(copy, db, "inv", "db.check")
    step(copy, db, "inv", "db.verify")
    # The previous release (its own scripts end at HEAD) starts on the expanded database.
    previous = in_copy(
        copy,
        db,
        sys.executable,
        "-c",
        "import uaip_db; from uaip_db.migrations import history; "
        f"print(uaip_db.check_migrations(scripts=history.load().as_of({HEAD!r})).summary())",
    )
    assert previous.returncode == 0, previous.stderr
    assert "by expand revision(s) only" in previous.stdout
    step(copy, None, "inv", "db.roundtrip")  # a revision after a backfill round-trips

    # Deploy release N+1; the application's statements stop using project_name (step 2).
    for script in (copy / "workload").glob("*.sql"):
        script.write_text(script.read_text().replace("project_name", "title"))

    # Release N+2, contract: drop the old column (step 3).
    contract = write_revision(
        copy,
        "rename project_name to title contract",
        "from uaip_db.ops import rename_column_contract, rename_column_contract_undo",
        'phase = "contract"\ndestroys_data = "project_name: kept in title since the expand"',
        CONTRACT_BODY.format(comment=comment),
    )
    step(copy, None, "inv", "db.snapshots")
    step(copy, None, "inv", "db.docs")
    linted = in_copy(copy, None, "inv", "db.lint")
    assert linted.returncode == 1 and "ban-drop-column" in linted.stderr
    entry = linted.stderr[linted.stderr.index("[[exception]]") :].splitlines()[:4]
    with (copy / "migrations" / "lint-exceptions.toml").open("a") as file:
        file.write("\n" + "\n".join(line.strip() for line in entry) + "\n")
    step(copy, None, "inv", "db.lint")
    step(copy, None, "inv", "db.roundtrip")  # a declared drop round-trips
    commit_all(copy, "Release N+2")

    # The release check under writers, on a copy of the 200,000 rows.
    checked = in_copy(copy, db, "inv", "release.check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = next((copy / "reports").glob("release-*.md")).read_text()
    assert "10. Previous release: PASS" in report
    assert f"- after `{revision_id(contract)}` (contract): start-up check refuses" in report
    assert "project_name" in report and "Whether to destroy data" in report

    # The release, then way B exactly as printed, then way A exactly as printed.
    step(copy, db, "inv", "db.upgrade")
    assert sql(db, "SELECT count(*) FROM sessions WHERE title LIKE 'Project %'") == [(ROWS,)]
    way_a = re.search(r"\*\*A\. Restore the backup\*\* [^`]*`(inv db\.restore [^`]+)`", report)
    way_b = re.search(r"\*\*B\. Downgrade\*\* [^`]*`[^`]*`[^`]*`(inv db\.downgrade [^`]+)`", report)
    assert way_a and way_b, report
    step(copy, db, *way_b.group(1).split())
    step(copy, db, "inv", "db.verify")
    assert sql(db, "SELECT count(*) FROM sessions WHERE project_name LIKE 'Project %'") == [(ROWS,)]
    step(copy, db, "inv", "db.upgrade")
    step(copy, db, *way_a.group(1).split())
    step(copy, db, "inv", "db.verify")
    assert sql(db, "SELECT count(*) FROM sessions WHERE project_name LIKE 'Project %'") == [(ROWS,)]
    step(copy, db, "inv", "db.upgrade")

    # The repository's own checks, on the copy: ruff, lint, generated files, the nox legs of
    # one major, the whole pytest.
    # (`nox -s lint` needs a virtualenv of its own: its steps that read the revisions run here.)
    step(copy, None, "ruff", "check", "--no-cache", ".")
    step(copy, None, "ruff", "format", "--no-cache", "--check", ".")
    step(copy, None, "inv", "db.lint")
    step(copy, None, "inv", "db.snapshots", "--check")
    step(copy, None, "inv", "db.docs", "--check")
    legs = [f"migrations(pg='16', db='{db_kind}')" for db_kind in ("fresh", "seeded")]
    nox = in_copy(copy, None, "nox", "--no-venv", "-s", *legs)
    assert nox.returncode == 0, nox.stdout + nox.stderr
    run_the_suite(copy)
