"""The inv tasks as a person runs them: output, exit status, and no password anywhere."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tests.conftest import (
    CHAIN,
    COMMENTS,
    EMAIL,
    FREE_COLUMN,
    HEAD,
    ROOT,
    WIDEN,
    run_cli,
    run_inv,
    sql,
    write_revision,
)
from uaip_db.migrations import applied, runner
from uaip_db.servers.scratch import ScratchServer, free_port
from uaip_db.settings import DatabaseConfig

TASKS = (
    "db.up",
    "db.down",
    "db.status",
    "db.upgrade",
    "db.downgrade",
    "db.current",
    "db.history",
    "db.revision",
    "db.stamp",
    "db.seed",
)


def assert_no_password(result: object, database: DatabaseConfig) -> None:
    text = f"{result.stdout}{result.stderr}"  # type: ignore[attr-defined]
    assert database.password not in text
    assert "Traceback" not in text


def test_list_shows_every_task_with_help() -> None:
    result = run_inv("--list")
    assert result.returncode == 0
    for name in TASKS:
        line = next(
            (line for line in result.stdout.splitlines() if line.strip().startswith(name + " ")), ""
        )
        assert len(line.split()) > 1, f"{name} has no help line"


def test_every_argument_has_help() -> None:
    for name in TASKS:
        result = run_inv("--help", name)
        assert result.returncode == 0
        options = result.stdout.split("Options:", 1)[-1]
        for line in options.splitlines():
            if line.strip().startswith("-"):
                assert len(line.split("  ")) > 1 or "help" in line, f"{name}: {line}"


def test_upgrade_then_current(empty_db: DatabaseConfig) -> None:
    result = run_inv("db.upgrade", database=empty_db)
    assert result.returncode == 0, result.stderr
    assert "applied 03033cebb647 (Initial schema from init.sql)" in result.stdout
    assert f"Now at {HEAD}" in result.stdout
    assert_no_password(result, empty_db)
    again = run_inv("db.upgrade", database=empty_db)
    assert again.returncode == 0 and "nothing to do" in again.stdout
    current = run_inv("db.current", database=empty_db)
    assert current.stdout.startswith(HEAD) and "[head]" in current.stdout


def test_upgrade_sql_prints_without_touching_the_database(empty_db: DatabaseConfig) -> None:
    result = run_inv("db.upgrade", "--sql", database=empty_db)
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE sessions" in result.stdout
    assert sql(empty_db, "SELECT to_regclass('sessions')") == [(None,)]


def test_downgrade_to_base_asks_for_yes(head_db: DatabaseConfig) -> None:
    refused = run_inv("db.downgrade", "--rev", "base", database=head_db)
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert sql(head_db, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    done = run_inv("db.downgrade", "--rev", "base", "--yes", database=head_db)
    assert done.returncode == 0, done.stderr
    assert "Now at base" in done.stdout
    assert sql(head_db, "SELECT to_regclass('sessions')") == [(None,)]


def test_downgrade_one_step_by_default(empty_db: DatabaseConfig) -> None:
    runner.upgrade(empty_db, COMMENTS)
    result = run_inv("db.downgrade", database=empty_db)
    assert result.returncode == 0, result.stderr
    assert sql(empty_db, "SELECT version_num FROM alembic_version") == [(WIDEN,)]


def test_a_downgrade_that_leaves_an_index_behind_exits_1_naming_it(
    head_db: DatabaseConfig, checkout: Path
) -> None:
    """Issue 25: the schema a downgrade reaches is compared with the target's committed snapshot
    on the spot, not at a later db.verify."""
    versions = checkout / "migrations" / "versions"
    create = f"CREATE INDEX ix_sessions_forgotten ON sessions ({FREE_COLUMN.name})"
    write_revision(versions, "eeee00000005", HEAD, [create], ["SELECT 1"])
    env = {"UAIP_DB_ROOT": str(checkout)}
    up = run_inv("db.upgrade", database=head_db, env=env)
    # No committed snapshot of the new revision yet (it is being written): said, not failed.
    assert up.returncode == 0, up.stderr
    assert "Not compared with a committed snapshot" in up.stdout
    down = run_inv("db.downgrade", "--yes", database=head_db, env=env)
    assert down.returncode == 1, down.stdout + down.stderr
    lines = down.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in down.stderr, lines
    assert f"The downgrade reached revision {HEAD}" in lines[0]
    assert "ix_sessions_forgotten" in lines[0] and "eeee00000005" in lines[1]
    assert f"Now at {HEAD}" in down.stdout
    assert_no_password(down, head_db)


def test_what_differed_before_a_downgrade_is_not_blamed_on_it(head_db: DatabaseConfig) -> None:
    sql(head_db, "CREATE TABLE hand_made (id int)")  # drift db.verify names; not the downgrade's
    # --yes: the head revision's downgrade may drop something of its own (a later revision's).
    result = run_inv("db.downgrade", "--yes", database=head_db)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "still differs from revision" in result.stdout and "as it did before" in result.stdout


def test_an_upgrade_that_builds_another_schema_than_its_snapshot_exits_1(
    head_db: DatabaseConfig, checkout: Path
) -> None:
    from uaip_db.migrations import snapshots

    versions = checkout / "migrations" / "versions"
    create = f"CREATE INDEX ix_sessions_unsaid ON sessions ({FREE_COLUMN.name})"
    write_revision(versions, "eeee00000006", HEAD, [create], ["DROP INDEX ix_sessions_unsaid"])
    # Its committed snapshot says it changes nothing; the sources say it is current.
    folder = checkout / "migrations" / "snapshots"
    shutil.copy(folder / f"{HEAD}.json", folder / "eeee00000006.json")
    snapshots.sources_path().write_text(snapshots.sources_text(), encoding="utf-8")
    result = run_inv("db.upgrade", database=head_db, env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "The upgrade reached revision eeee00000006" in result.stderr
    assert "ix_sessions_unsaid" in result.stderr


def test_downgrade_past_base_is_refused(head_db: DatabaseConfig) -> None:
    result = run_inv("db.downgrade", "--rev", "-9", "--yes", database=head_db)
    assert result.returncode == 2
    assert f"only {len(CHAIN)} are applied" in result.stderr


def test_unknown_revision(empty_db: DatabaseConfig) -> None:
    result = run_inv("db.upgrade", "--rev", "abc123", database=empty_db)
    assert result.returncode == 2
    assert "abc123" in result.stderr and "db.history" in result.stderr
    assert_no_password(result, empty_db)


def test_seed_stamp_upgrade(empty_db: DatabaseConfig) -> None:
    seeded = run_inv("db.seed", database=empty_db)
    assert seeded.returncode == 0, seeded.stderr
    assert "db.stamp --rev 03033cebb647" in seeded.stdout
    onward = run_inv("db.stamp", "--rev", "03033cebb647", "db.upgrade", database=empty_db)
    assert onward.returncode == 0, onward.stderr
    assert "applied 8f2b6c1d4e7a" in onward.stdout
    assert "applied 03033cebb647" not in onward.stdout
    again = run_inv("db.seed", database=empty_db)
    assert again.returncode == 1 and "already has UAIP tables" in again.stderr


def test_stamp_needs_a_revision(empty_db: DatabaseConfig) -> None:
    result = run_inv("db.stamp", database=empty_db)
    assert result.returncode == 2 and "--rev" in result.stderr


def test_revision_needs_a_message() -> None:
    result = run_inv("db.revision", "-m", "   ")
    assert result.returncode == 2
    assert "needs a message" in result.stderr


def test_a_new_revision_is_clean_and_says_what_next(checkout: Path) -> None:
    result = run_inv(
        "db.revision", "-m", "add zz scratch table", env={"UAIP_DB_ROOT": str(checkout)}
    )
    assert result.returncode == 0, result.stderr
    written = sorted((checkout / "migrations" / "versions").glob("*add_zz_scratch_table.py"))
    assert len(written) == 1 and str(written[0]) in result.stdout
    assert "inv db.snapshots" in result.stdout and "inv db.roundtrip" in result.stdout
    shutil.copy(ROOT / "pyproject.toml", checkout / "pyproject.toml")
    ruff = run_cli("ruff", "check", "--no-cache", str(written[0]), cwd=checkout)
    assert ruff.returncode == 0, ruff.stdout
    # mypy --strict on a new file (a minute from a cold cache) is in the walk:
    # tests/test_next_migration.py::test_the_new_revision_passes_mypy_strict_as_written_and_edited


def test_a_revision_message_that_would_break_the_file_is_refused(checkout: Path) -> None:
    before = sorted((checkout / "migrations" / "versions").glob("*.py"))
    result = run_inv("db.revision", "-m", 'say """hi"""', env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 2 and "rephrase" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted((checkout / "migrations" / "versions").glob("*.py")) == before


def test_wrong_password_is_one_clear_line(empty_db: DatabaseConfig) -> None:
    wrong = replace(empty_db, password="not-the-password-%#@")
    result = run_inv("db.upgrade", database=wrong)
    assert result.returncode == 2
    assert "password was refused" in result.stderr
    assert len(result.stderr.strip().splitlines()) <= 2
    assert_no_password(result, wrong)
    assert_no_password(result, empty_db)


def test_server_down_says_how_to_start_one() -> None:
    nowhere = DatabaseConfig(host="127.0.0.1", port=free_port(), password="secret-xyz")
    result = run_inv("db.current", database=nowhere)
    assert result.returncode == 2
    assert "No PostgreSQL server answers" in result.stderr and "inv db.up" in result.stderr
    assert_no_password(result, nowhere)


def test_unknown_host() -> None:
    nowhere = DatabaseConfig(host="no-such-host.invalid", password="secret-xyz")
    result = run_inv("db.current", database=nowhere)
    assert result.returncode == 2
    assert "Unknown host 'no-such-host.invalid'" in result.stderr


def test_bad_port_setting(empty_db: DatabaseConfig) -> None:
    result = run_inv("db.current", database=empty_db, env={"DB_PORT": "abc"})
    assert result.returncode == 2
    assert "DB_PORT='abc' is not a port number" in result.stderr


def test_settings_from_dotenv_when_the_environment_is_silent(
    server: ScratchServer, empty_db: DatabaseConfig, tmp_path: Path
) -> None:
    root = tmp_path / "checkout"
    root.mkdir()
    for name in ("alembic.ini", "migrations", "database", "tasks.py"):
        (root / name).symlink_to(ROOT / name)
    (root / ".env").write_text(
        f"DB_HOST={empty_db.host}\nDB_PORT={empty_db.port}\nDB_NAME={empty_db.name}\n"
        f'DB_USER={empty_db.user}\nDB_PASSWORD="{empty_db.password}"\n'
    )
    # A child process: the checkout's own .env, which tests otherwise never read.
    result = run_cli("inv", "db.upgrade", cwd=root, env={"UAIP_DB_ROOT": str(root)})
    assert result.returncode == 0, result.stderr
    assert sql(empty_db, "SELECT version_num FROM alembic_version") == [(HEAD,)]


def test_tasks_run_from_a_subdirectory(head_db: DatabaseConfig) -> None:
    # A child process started there: tasks.py and the checkout found from the working directory.
    result = run_cli("inv", "db.current", database=head_db, cwd=ROOT / "migrations" / "versions")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(HEAD)


@pytest.mark.parametrize("backend", ["docker"])
def test_docker_backend_without_an_engine(backend: str, tmp_path: Path) -> None:
    result = run_inv(
        "db.up", "--backend", backend, env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}
    )
    assert result.returncode == 2
    assert "No Docker engine answers" in result.stderr


def test_upgrade_sql_renders_what_this_database_is_missing(empty_db: DatabaseConfig) -> None:
    runner.upgrade(empty_db, WIDEN)
    result = run_inv("db.upgrade", "--sql", database=empty_db)
    assert result.returncode == 0, result.stderr
    assert f"is at {WIDEN}" in result.stderr
    assert f"Running upgrade {WIDEN} -> " in result.stdout
    assert "CREATE TABLE alembic_version" not in result.stdout
    assert "CREATE TABLE sessions" not in result.stdout
    ranged = run_inv("db.upgrade", "--sql", "--rev", "current:head", database=empty_db)
    assert ranged.returncode == 0 and ranged.stdout == result.stdout
    assert applied.current_revisions(empty_db) == (WIDEN,)  # nothing was applied


def test_upgrade_sql_without_a_database_renders_from_base() -> None:
    nowhere = DatabaseConfig(host="127.0.0.1", port=free_port(), password="secret-xyz")
    result = run_inv("db.upgrade", "--sql", database=nowhere)
    assert result.returncode == 0, result.stderr
    assert "No PostgreSQL server answers" in result.stderr and "from base" in result.stderr
    assert "CREATE TABLE sessions" in result.stdout
    assert "secret-xyz" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("db.upgrade", "--sql", "--rev", "deadbeef:head"),
        ("db.downgrade", "--sql", "--rev", f"{HEAD}:deadbeef"),
    ],
)
def test_sql_for_an_unknown_revision_writes_no_sql(args: tuple[str, ...]) -> None:
    """A piped script got the header (`\\set ON_ERROR_STOP on`, the timeouts) before the error."""
    nowhere = DatabaseConfig(host="127.0.0.1", port=free_port())
    result = run_inv(*args, database=nowhere)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == "Unknown revision 'deadbeef'; `inv db.history` lists them."


def test_a_url_that_would_reach_another_database_is_refused(empty_db: DatabaseConfig) -> None:
    url = (
        f"postgresql://{empty_db.user}@{empty_db.host}:{empty_db.port}/decoy?dbname={empty_db.name}"
    )
    result = run_inv("db.upgrade", env={"DATABASE_URL": url, "DB_PASSWORD": ""})
    assert result.returncode == 2
    assert "could connect somewhere other than the URL names" in result.stderr
    assert applied.current_revisions(empty_db) == ()


def test_status_current_and_history_as_json(empty_db: DatabaseConfig) -> None:
    import json

    runner.upgrade(empty_db, WIDEN)
    status = json.loads(run_inv("db.status", "--json", database=empty_db).stdout)
    assert status["current"] == [WIDEN] and status["reachable"] and not status["at_head"]
    assert [item["revision"] for item in status["pending"]] == CHAIN[CHAIN.index(WIDEN) + 1 :]
    assert "servers" in status and empty_db.password not in json.dumps(status)
    current = json.loads(run_inv("db.current", "--json", database=empty_db).stdout)
    assert current["current"] == [WIDEN] and current["heads"] == [HEAD]
    listed = json.loads(run_inv("db.history", "--json").stdout)
    assert [item["revision"] for item in listed] == list(reversed(CHAIN))
    assert [item["head"] for item in listed] == [True] + [False] * (len(CHAIN) - 1)


def test_status_json_of_an_unreachable_database() -> None:
    import json

    nowhere = DatabaseConfig(host="127.0.0.1", port=free_port(), password="secret-xyz")
    result = run_inv("db.status", "--json", database=nowhere)
    assert result.returncode == 2, "a connection problem, as the README promises"
    status = json.loads(result.stdout)
    assert not status["reachable"] and "No PostgreSQL server answers" in status["error"]
    assert "secret-xyz" not in result.stdout
    shown = run_inv("db.status", database=nowhere)
    assert shown.returncode == 2 and "database: not reachable" in shown.stdout
    assert "Traceback" not in shown.stderr


@pytest.mark.parametrize("name", ["DB_PORT", "UAIP_READ_LOCK_WAIT"])
def test_status_with_a_refused_setting_still_shows_the_rest(name: str) -> None:
    import json

    env = {name: "54x2", "DB_PASSWORD": "secret-xyz"}
    shown = run_inv("db.status", env=env)
    assert shown.returncode == 2 and "Traceback" not in shown.stderr
    lines = shown.stdout.splitlines()
    assert any(line.startswith(f"  {name}=54x2 (environment); refused:") for line in lines)
    assert any(line.startswith("database: not checked:") and name in line for line in lines)
    assert any(line.startswith("local cluster:") for line in lines), "the servers are shown"
    status = json.loads(run_inv("db.status", "--json", env=env).stdout)
    assert not status["reachable"] and name in status["error"]
    assert "secret-xyz" not in shown.stdout + json.dumps(status)


@pytest.mark.parametrize(
    "args", [("db.check",), ("db.verify",), ("db.current",), ("db.lint", "--since", "0ff1ce")]
)
def test_json_commands_print_json_when_they_fail_before_their_result(args: tuple[str]) -> None:
    import json

    nowhere = DatabaseConfig(host="127.0.0.1", port=free_port(), password="secret-xyz")
    result = run_inv(*args, "--json", database=nowhere)
    assert result.returncode == 2, result.stdout + result.stderr
    said = json.loads(result.stdout)
    assert said["exit_code"] == 2 and said["error"] == result.stderr.strip()
    assert "secret-xyz" not in result.stdout + result.stderr


def test_status_lists_the_settings_and_where_they_came_from(tmp_path: Path) -> None:
    import json

    nowhere = DatabaseConfig(host="127.0.0.1", port=free_port(), password="secret-xyz")
    env = {"UAIP_LOCK_BUDGET": "30", "UAIP_BACKUP_DIR": str(tmp_path)}
    result = run_cli("inv", "db.status", "--json", database=nowhere, env=env)
    listed = {item["name"]: item for item in json.loads(result.stdout)["settings"]}
    assert listed["UAIP_LOCK_BUDGET"] == {
        "name": "UAIP_LOCK_BUDGET",
        "value": "30",
        "source": "environment",
        "problem": None,
        "note": None,
    }
    assert listed["DB_PASSWORD"]["value"] == "***"
    assert (listed["UAIP_LOCK_WAIT"]["value"], listed["UAIP_LOCK_WAIT"]["source"]) == (
        "60",
        "default",
    )
    shown = run_cli("inv", "db.status", database=nowhere, env=env)
    assert "  UAIP_LOCK_BUDGET=30 (environment)" in shown.stdout.splitlines()
    assert "settings set, the others at their defaults" in shown.stdout
    assert "secret-xyz" not in result.stdout + shown.stdout


def test_psql_with_a_refused_password_is_one_line_of_ours(head_db: DatabaseConfig) -> None:
    from dataclasses import replace

    wrong = replace(head_db, password="not-the-password")
    result = run_cli("inv", "db.psql", "--command", "SELECT 1", database=wrong)
    assert result.returncode == 2
    assert "the password was refused" in result.stderr and "FATAL" not in result.stderr
    assert "not-the-password" not in result.stderr


def test_psql_on_the_configured_database(head_db: DatabaseConfig) -> None:
    result = run_cli(
        "inv",
        "db.psql",
        "--command",
        "SELECT current_database(), count(*) FROM sessions",
        database=head_db,
        env={"PGSERVICE": "nowhere"},
    )
    assert result.returncode == 0, result.stderr
    assert head_db.name in result.stdout and " 0" in result.stdout
    assert head_db.password not in result.stdout + result.stderr


def test_a_downgrade_a_guard_stops_says_where_the_database_is_now(
    head_db: DatabaseConfig,
) -> None:
    sql(head_db, "INSERT INTO sessions (user_id) VALUES (repeat('x', 300))")
    # From head, the revisions after WIDEN are reverted before WIDEN's guard stops it.
    result = run_inv("db.downgrade", "--rev", EMAIL, "--yes", database=head_db)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in result.stderr, lines
    assert "sessions.user_id has 1 value(s) longer than 255 characters" in lines[0]
    assert lines[1].startswith(f"Now at {WIDEN}")
    assert applied.current_revisions(head_db) == (WIDEN,)
    # Stopped before anything was reverted: the one line says it all.
    again = run_inv("db.downgrade", "--rev", EMAIL, "--yes", database=head_db)
    assert again.returncode == 1 and len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert applied.current_revisions(head_db) == (WIDEN,)


def test_an_unknown_revision_to_upgrade_to_is_named_before_anything_else(
    head_db: DatabaseConfig,
) -> None:
    runner.downgrade(head_db, WIDEN)
    result = run_inv("db.upgrade", "--rev", "deadbeef", database=head_db)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "Unknown revision 'deadbeef'; `inv db.history` lists them."
    ]
    assert applied.current_revisions(head_db) == (WIDEN,)
    # A unique prefix still names a revision.
    prefix = run_inv("db.upgrade", "--rev", HEAD[:6], database=head_db)
    assert prefix.returncode == 0, prefix.stderr
    assert applied.current_revisions(head_db) == (HEAD,)


CHATTY = '''"""A revision that prints."""
from alembic import op

revision = "c4a77e000001"
down_revision = "{head}"
branch_labels = None
depends_on = None
print("loaded a chatty revision")


def upgrade() -> None:
    print("upgrading chattily")
    op.execute("CREATE TABLE chatty (id int)")


def downgrade() -> None:
    op.execute("DROP TABLE chatty")
'''


def test_json_output_is_json_only_whatever_a_revision_prints(
    checkout: Path, head_db: DatabaseConfig, tmp_path: Path
) -> None:
    import json

    from tests.fleet.conftest import PASSWORD_VARIABLE, targets_text

    (checkout / "migrations" / "versions" / "c4a77e000001_chatty.py").write_text(
        CHATTY.format(head=HEAD)
    )
    env = {"UAIP_DB_ROOT": str(checkout)}
    check = run_inv("db.check", "--json", database=head_db, env=env)
    assert check.returncode == 3, check.stderr
    assert json.loads(check.stdout)["pending"]
    targets = tmp_path / "targets.toml"
    admin = replace(head_db, name="postgres")
    targets.write_text(targets_text({"one": head_db}, admin))
    upgraded = run_inv(
        "fleet.upgrade",
        "--targets",
        str(targets),
        "--json",
        env={**env, PASSWORD_VARIABLE: head_db.password},
    )
    assert upgraded.returncode == 0, upgraded.stderr
    assert json.loads(upgraded.stdout)["targets"][0]["status"] == "upgraded"
    assert "upgrading chattily" in upgraded.stderr


def test_history_marks_the_revision_the_database_is_at(head_db: DatabaseConfig) -> None:
    import json

    runner.downgrade(head_db, WIDEN)
    shown = run_inv("db.history", database=head_db)
    assert shown.returncode == 0, shown.stderr
    marked = [line for line in shown.stdout.splitlines() if "(current)" in line]
    assert marked == [f"{EMAIL} -> {WIDEN} (current), Widen sessions.user_id to 500 characters"]
    verbose = run_inv("db.history", "--verbose", database=head_db)
    assert f"Rev: {WIDEN} (current)" in verbose.stdout
    listed = json.loads(run_inv("db.history", "--json", database=head_db).stdout)
    assert [item["revision"] for item in listed if item["current"]] == [WIDEN]
    # Without a database to ask, the history is the scripts' alone.
    alone = run_inv("db.history", env={"DB_PORT": str(free_port())})
    assert alone.returncode == 0 and "(current)" not in alone.stdout
