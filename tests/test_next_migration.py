"""The job this repository exists for: adding the next revision, the way docs/MIGRATIONS.md
section 4 says, to a scratch copy of the checkout, after which the repository's own checks pass.
These are walks (marker `walk`): `nox -s walks` runs them, not the plain `pytest`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, cli_env, sql
from uaip_db.servers.binaries import RELEASES
from uaip_db.settings import DatabaseConfig

# Minutes of nox and nested pytest runs: `nox -s walks` (pytest -m walk) runs them, CI included.
pytestmark = pytest.mark.walk

UPGRADE = '''def upgrade() -> None:
    """Apply this change."""
    op.execute(
        "CREATE TABLE users (user_id uuid PRIMARY KEY DEFAULT uuid_generate_v4(), "
        "session_id uuid NOT NULL REFERENCES sessions(session_id) ON DELETE CASCADE, "
        "name varchar(200) NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"
    )
    op.execute("CREATE INDEX idx_users_session_id ON users (session_id)")
    op.execute("ALTER TABLE stage_data ADD COLUMN reviewer_note text")
    set_comments(
        op,
        {
            "users": "People who take part in a scoping session.",
            "users.user_id": "Identifies the user.",
            "users.session_id": "The session the user belongs to.",
            "users.name": "The user's name.",
            "users.created_at": "When the user was added.",
            "stage_data.reviewer_note": "A reviewer's note on the stage, if any.",
        },
    )
'''
DOWNGRADE = '''def downgrade() -> None:
    """Undo exactly what upgrade() did."""
    op.execute("ALTER TABLE stage_data DROP COLUMN reviewer_note")
    op.execute("DROP TABLE users")
'''


def copy_checkout(target: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def in_copy(
    copy: Path, database: DatabaseConfig | None, *args: str
) -> subprocess.CompletedProcess[str]:
    env = cli_env(
        database,
        UAIP_DB_ROOT=str(copy),
        PYTHONPATH=str(copy / "src"),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        UAIP_TEST_SERVER="cluster",
    )
    program = args[0] if args[0] == sys.executable else str(BIN / args[0])
    return subprocess.run(
        [program, *args[1:]], cwd=copy, env=env, capture_output=True, text=True, timeout=600
    )


def step(copy: Path, database: DatabaseConfig | None, *args: str) -> str:
    result = in_copy(copy, database, *args)
    assert result.returncode == 0, f"{' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def write_next_revision(copy: Path) -> Path:
    """`inv db.revision`, then what the developer writes into the new file (the file as
    `inv db.revision` wrote it is kept beside the copy, named as_written_NAME)."""
    written = step(copy, None, "inv", "db.revision", "-m", "add users")
    path = next((copy / "migrations" / "versions").glob("*_add_users.py"))
    assert str(path) in written
    text = path.read_text()
    (copy.parent / f"as_written_{path.name}").write_text(text)
    text = text.replace(
        'def upgrade() -> None:\n    """Apply this change."""\n    pass\n', UPGRADE
    ).replace(
        'def downgrade() -> None:\n    """Undo exactly what upgrade() did."""\n    pass\n',
        DOWNGRADE,
    )
    text = text.replace(
        "# revision identifiers", "from uaip_db.ops import set_comments\n\n# revision identifiers"
    ).replace(
        "\n\ndef upgrade()",
        '\ndestroys_data_on_downgrade = "users, stage_data.reviewer_note"\n\n\ndef upgrade()',
    )
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def with_next_revision(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A copy of the checkout with the next revision written and its generated files refreshed
    (docs/MIGRATIONS.md section 4); each test works on its own copy of it."""
    copy = copy_checkout(tmp_path_factory.mktemp("next") / "checkout")
    path = write_next_revision(copy)
    step(copy, None, "inv", "db.snapshots")
    step(copy, None, "inv", "db.docs")
    return copy, path


def own_copy(prepared: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    copy, path = prepared
    mine = tmp_path / "checkout"
    shutil.copytree(copy, mine, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    return mine, mine / path.relative_to(copy)


def test_the_next_migration_keeps_every_check_green(
    with_next_revision: tuple[Path, Path], empty_db: DatabaseConfig, tmp_path: Path
) -> None:
    copy, path = own_copy(with_next_revision, tmp_path)
    assert "users" in (copy / "docs" / "schema" / "README.md").read_text()

    # The documented steps (docs/MIGRATIONS.md section 4).
    step(copy, empty_db, "inv", "db.upgrade")
    step(copy, empty_db, "inv", "db.downgrade", "--yes")
    step(copy, empty_db, "inv", "db.upgrade")
    step(copy, None, "inv", "db.lint")
    step(copy, None, "inv", "db.roundtrip")
    step(copy, empty_db, "inv", "db.check")
    assert sql(empty_db, "SELECT to_regclass('users') IS NOT NULL") == [(True,)]

    # Changing it while it is applied only locally (section 4): the checks say what to run.
    path.write_text(path.read_text().replace("The user's name.", "The user's display name."))
    edited = in_copy(copy, empty_db, "inv", "db.check")
    assert edited.returncode == 1
    assert "was edited after it was applied" in edited.stderr
    assert "run `inv db.snapshots`" in edited.stderr
    step(copy, empty_db, "inv", "db.downgrade", "--yes")
    step(copy, empty_db, "inv", "db.upgrade")
    step(copy, None, "inv", "db.snapshots")
    step(copy, None, "inv", "db.docs")
    step(copy, empty_db, "inv", "db.check")
    step(copy, empty_db, "inv", "db.verify")
    assert "display name" in (copy / "docs" / "schema" / "README.md").read_text()

    # The repository's own checks, on the copy.
    step(copy, None, "ruff", "check", "--no-cache", str(path))
    step(copy, None, "inv", "db.snapshots", "--check")
    step(copy, None, "inv", "db.docs", "--check")


def test_the_new_revision_passes_mypy_strict_as_written_and_edited(
    with_next_revision: tuple[Path, Path],
) -> None:
    copy, path = with_next_revision
    as_written = copy.parent / f"as_written_{path.name}"
    result = in_copy(copy, None, "mypy", "--strict", "--no-incremental", str(as_written), str(path))
    assert result.returncode == 0, result.stdout + result.stderr


# `nox -s migrations` on the copy, one major per test so the legs spread over the workers.
@pytest.mark.parametrize("major", [str(major) for major in RELEASES])
def test_the_migrations_session_passes_with_the_next_revision(
    with_next_revision: tuple[Path, Path], tmp_path: Path, major: str
) -> None:
    copy, _ = own_copy(with_next_revision, tmp_path)
    legs = [f"migrations(pg='{major}', db='{db}')" for db in ("fresh", "seeded")]
    result = in_copy(copy, None, "nox", "--no-venv", "-s", *legs)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    for leg in legs:
        assert f"{leg}: success" in result.stderr


def test_the_whole_suite_passes_with_the_next_revision(
    with_next_revision: tuple[Path, Path], tmp_path: Path
) -> None:
    copy, _ = own_copy(with_next_revision, tmp_path)
    run_the_suite(copy)


def run_the_suite(copy: Path) -> None:
    """The repository's whole pytest, as the README runs it, on `copy`: no test, fixture or
    sample is written against one version of the schema. (The plain pytest leaves the Docker
    tests out: they build images of the copy, a minute each, and read no column.)"""
    step(copy, None, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider")
