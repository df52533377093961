"""Child processes: real programs, the password only in the environment, nothing outlives us."""

from __future__ import annotations

import os
import signal
import stat
import sys
import tempfile
import time
from pathlib import Path

import pytest

from uaip_db import process
from uaip_db.errors import BackupError, CheckFailed, SettingsError
from uaip_db.servers.local import find_bindir
from uaip_db.settings import DatabaseConfig

PYTHON = sys.executable
SECRET = "s3cret-in-env"
CONFIG = DatabaseConfig(host="localhost", port=5432, name="db", user="u", password=SECRET)
PARENT = """
import signal, sys, time
from uaip_db import process
death = signal.SIGKILL if sys.argv[1] == "yes" else None
child = process.start(["sleep", "600"], parent_death_signal=death)
print(child.pid, flush=True)
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def python(code: str) -> list[str]:
    return [PYTHON, "-c", code]


# --- execute and start ----------------------------------------------------------------------


def test_execute_adds_to_the_environment_and_feeds_only_what_it_is_given() -> None:
    code = (
        "import os, sys; print(os.environ['UAIP_X'], 'PATH' in os.environ, repr(sys.stdin.read()))"
    )
    ran = process.execute(python(code), env={"UAIP_X": "here"})
    assert ran.returncode == 0 and ran.stdout == "here True ''\n"
    fed = process.execute(python(code), env={"UAIP_X": "here"}, input="Grüße\n")
    assert fed.stdout == "here True 'Grüße\\n'\n"


def test_execute_returns_failures_and_replaces_bytes_that_are_not_utf8() -> None:
    ran = process.execute(python("import sys; sys.stdout.buffer.write(b'a\\xffb'); sys.exit(3)"))
    assert ran.returncode == 3 and ran.stdout == "a\ufffdb"
    with pytest.raises(process.CalledProcessError):
        process.execute(python("raise SystemExit(1)"), check=True)


def test_execute_raises_when_a_program_is_missing_or_too_slow() -> None:
    with pytest.raises(OSError):
        process.execute(["uaip-no-such-program"])
    with pytest.raises(process.TimeoutExpired):
        process.execute(["sleep", "5"], timeout=0.2)


def test_a_umask_makes_the_files_a_program_writes_owner_only(tmp_path: Path) -> None:
    written = tmp_path / "out"
    process.execute(python(f"open({str(written)!r}, 'w').write('x')"), umask=0o077)
    assert stat.S_IMODE(written.stat().st_mode) == 0o600


@pytest.mark.root  # only root switches to the server account
def test_as_server_runs_as_the_server_account_from_the_root_folder() -> None:
    account = process.server_account()
    assert account is not None
    # The server account may not reach this venv's python: ask the shell.
    ran = process.execute(["sh", "-c", "id -u; id -g; pwd"], as_server=True)
    assert ran.stdout.split() == [str(account[0]), str(account[1]), "/"]
    with tempfile.TemporaryDirectory(dir="/tmp") as folder:
        os.chmod(folder, 0o700)
        assert not process.server_account_can_use(Path(folder))
        process.give_to_server_account(Path(folder))
        assert process.server_account_can_use(Path(folder))


def test_start_pipes_text_or_writes_both_streams_to_a_log(tmp_path: Path) -> None:
    code = "import sys; print('out ✓'); print('err', file=sys.stderr)"
    piped = process.start(python(code))
    assert piped.communicate() == ("out ✓\n", "err\n") and piped.returncode == 0
    log_path = tmp_path / "log"
    with log_path.open("ab") as log:
        logged = process.start(python(code), log=log)
    assert logged.wait(timeout=30) == 0 and logged.stdout is None
    assert sorted(log_path.read_text(encoding="utf-8").splitlines()) == ["err", "out ✓"]


@pytest.mark.parametrize("asked", [True, False], ids=["dies-with-parent", "outlives-parent"])
def test_a_parent_death_signal_stops_the_child_when_its_parent_is_killed(asked: bool) -> None:
    parent = process.start([*python(PARENT), "yes" if asked else "no"])
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        assert alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.communicate()
        deadline = time.monotonic() + (10 if asked else 0.5)
        while alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive(child) is not asked
    finally:
        if alive(child):
            os.kill(child, signal.SIGKILL)


# --- a program that must succeed ------------------------------------------------------------


def test_run_raises_the_chosen_error_with_the_last_line() -> None:
    failing = python(
        "import sys; print('first'); print('  the reason  ', file=sys.stderr); sys.exit(2)"
    )
    with pytest.raises(CheckFailed, match=r"^Could not do it: the reason$"):
        process.run(failing, what="do it", error=CheckFailed)
    with pytest.raises(
        CheckFailed, match=r"^Could not do it: uaip-no-such-program is not installed\.$"
    ):
        process.run(["uaip-no-such-program"], what="do it", error=CheckFailed)
    with pytest.raises(CheckFailed, match=r"^Could not do it: sleep did not finish in 0.2 s\.$"):
        process.run(["sleep", "5"], what="do it", error=CheckFailed, timeout=0.2)
    assert process.run(python("print('fine')"), what="do it").stdout == "fine\n"


# --- PostgreSQL's client programs -----------------------------------------------------------


def test_client_programs_come_from_the_server_binaries_else_from_path(tmp_path: Path) -> None:
    bindir = find_bindir()
    assert bindir is not None
    assert process.tool("pg_dump", bindir) == str(bindir / "pg_dump")
    assert process.tool("sleep", bindir) == process.tool("sleep", None)
    assert Path(process.tool("sleep", None)).name == "sleep"
    with pytest.raises(SettingsError, match=r"uaip_no_tool is not installed.*PG_BINDIR"):
        process.tool("uaip_no_tool", tmp_path)
    version = process.tool_version(process.tool("pg_dump", bindir))
    assert version.split(".")[0].isdigit()


def test_the_password_reaches_a_client_program_only_through_its_environment() -> None:
    code = "import os, sys; print(os.environ['PGPASSWORD'], os.environ['PGUSER'], sys.argv[1:])"
    ran = process.run_tool(python(code), [CONFIG], what="look")
    assert ran.stdout == f"{SECRET} u []\n"
    started = process.start_tool(python(code), [CONFIG])
    process.finish_tool(started, [CONFIG], what="look")
    assert started.returncode == 0


def test_a_failing_client_program_says_why_without_the_password() -> None:
    code = (
        "import os, sys; print('pg_dump: error: connection failed for', os.environ['PGPASSWORD'],"
        " file=sys.stderr); print('pg_dump: detail: more', file=sys.stderr); sys.exit(1)"
    )
    with pytest.raises(BackupError) as failed:
        process.run_tool(python(code), [CONFIG], what="back up db")
    assert str(failed.value) == "Could not back up db: pg_dump: error: connection failed for ***"
    started = process.start_tool(python(code), [CONFIG])
    with pytest.raises(BackupError) as finished:
        process.finish_tool(started, [CONFIG], what="back up db")
    assert str(finished.value) == str(failed.value)
    with pytest.raises(BackupError, match=r"^Could not back up db: /nonexistent/pg_dump cannot be"):
        process.run_tool(["/nonexistent/pg_dump"], [CONFIG], what="back up db")
    with pytest.raises(BackupError, match=r"^Could not run /nonexistent/pg_dump \("):
        process.start_tool(["/nonexistent/pg_dump"], [CONFIG])


def test_last_meaningful_line_skips_the_echoed_command() -> None:
    output = (
        "pg_restore: while PROCESSING TOC:\n"
        'pg_restore: error: could not execute query: ERROR:  relation "x" already exists\n'
        "Command was: CREATE TABLE public.x (\n    id integer\n);\n"
    )
    assert process.meaningful_line(output) == (
        'pg_restore: error: could not execute query: ERROR: relation "x" already exists'
    )
