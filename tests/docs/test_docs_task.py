"""db.docs keeps docs/schema/ true; db.diff tells a schema change in words."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import BASELINE, COMMENTS, HEAD, ROOT, run_inv, write_revision
from uaip_db.migrations import snapshots
from uaip_db.servers.scratch import ScratchServer


def test_committed_docs_are_current() -> None:
    result = run_inv("db.docs", "--check")
    assert result.returncode == 0, result.stderr
    readme = (ROOT / "docs" / "schema" / "README.md").read_text()
    assert "```mermaid\nerDiagram" in readme and HEAD in readme


def test_a_column_without_refreshed_docs_fails_the_check(
    server: ScratchServer, checkout: Path
) -> None:
    import shutil

    shutil.copytree(ROOT / "docs", checkout / "docs")
    write_revision(
        checkout / "migrations" / "versions",
        "d0c000000001",
        HEAD,
        upgrade=["ALTER TABLE checkpoints ADD COLUMN zz_test_label text"],
        downgrade=["ALTER TABLE checkpoints DROP COLUMN zz_test_label"],
        markers='destroys_data_on_downgrade = "checkpoints.zz_test_label"',
    )
    snapshots.write(snapshots.build(server))
    env = {"UAIP_DB_ROOT": str(checkout)}
    stale = run_inv("db.docs", "--check", env=env)
    assert stale.returncode == 1
    assert stale.stderr.strip() == (
        "docs/schema/ does not cover revision d0c000000001 (Test revision): run `inv db.docs` "
        "and commit the result."
    )
    written = run_inv("db.docs", env=env)
    assert written.returncode == 1, written.stdout
    assert "none on: column checkpoints.zz_test_label" in written.stderr
    readme = (checkout / "docs" / "schema" / "README.md").read_text()
    assert "| `zz_test_label` | `text` | yes |" in readme
    again = run_inv("db.docs", "--check", env=env)
    assert again.returncode == 1  # db.docs and db.docs --check agree
    assert "no comment: column checkpoints.zz_test_label" in again.stderr
    lint = run_inv("db.lint", env=env)
    assert lint.returncode == 1
    assert "[missing-comment] column checkpoints.zz_test_label has no comment" in lint.stderr
    assert run_inv("db.docs", env=env).returncode == 1  # written, still uncommented
    refreshed = run_inv("db.docs", "--check", env=env)
    assert (
        refreshed.returncode == 1
        and "no comment: column checkpoints.zz_test_label" in refreshed.stderr
    )
    assert "differs" not in refreshed.stderr


def test_diff_lists_exactly_the_v1_1_0_changes() -> None:
    result = run_inv("db.diff", "--from", "03033cebb647", "--to", "b41d9e0c7f25")
    assert result.returncode == 0, result.stderr
    changes = [line.strip() for line in result.stdout.splitlines() if line.startswith("  ")]
    assert changes[:3] == [
        "sessions: + column email character varying(255)",
        "sessions: + index idx_sessions_email",
        "sessions: ~ column user_id character varying(255) -> character varying(500)",
    ]
    assert "```mermaid" in result.stdout and "erDiagram" in result.stdout


def test_a_diff_folds_the_comments() -> None:
    # Between two revisions that never change, so that a later revision changes nothing here.
    result = run_inv("db.diff", "--from", BASELINE, "--to", COMMENTS)
    assert "sessions: ~ comments added on the table and 9 columns" in result.stdout
    assert "sessions: + column email character varying(255)" in result.stdout


def test_diff_of_an_unknown_revision() -> None:
    result = run_inv("db.diff", "--from", "nope")
    assert result.returncode == 2 and "Unknown revision 'nope'" in result.stderr
