"""Nox sessions for uaip-db: `nox -l` lists them, `nox -s NAME` runs one.

Every session that needs PostgreSQL gets a throwaway database (see uaip_db.servers.scratch); the
developer's database is never touched.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
# The throwaway server runs in this process, so the library must import before any venv exists.
sys.path.insert(0, str(ROOT / "src"))

from uaip_db.catalog import expected  # noqa: E402
from uaip_db.migrations import history  # noqa: E402
from uaip_db.migrations.baseline import BASELINE_REVISION  # noqa: E402
from uaip_db.servers.scratch import ScratchServer, child_env, start_scratch_server  # noqa: E402

# Bare `nox` runs these, cheapest first, so a lint slip fails in seconds.
nox.options.sessions = ["lint", "typecheck", "tests", "migrations"]
# uv builds the session venvs in seconds; plain virtualenv where uv is missing.
nox.options.default_venv_backend = "uv|virtualenv"
# Installing dependencies is most of a session's time; reuse venvs unless asked not to (-N).
nox.options.reuse_existing_virtualenvs = True

# The same `inv` steps a laptop runs, one list per leg; each leg ends verified and checked.
LEGS: dict[str, list[list[str]]] = {
    "fresh": [
        ["db.upgrade"],
        ["db.verify"],
        ["db.snapshots", "--check"],
        ["db.roundtrip"],
        ["db.downgrade", "--rev", "base", "--yes"],
        ["db.verify"],
        ["db.upgrade"],
        ["db.verify"],
        ["db.check"],
    ],
    "seeded": [
        ["db.seed"],
        ["db.stamp", "--rev", BASELINE_REVISION],
        ["db.upgrade"],
        ["db.verify"],
        ["db.check"],
    ],
}
_server: ScratchServer | None = None


@contextmanager
def throwaway_database(session: nox.Session, prefix: str) -> Iterator[dict[str, str]]:
    """A new database on the run's throwaway server, as child-process settings; dropped after.
    The server runs PostgreSQL 16 unless UAIP_PG_VERSION says otherwise."""
    global _server
    if _server is None:
        _server = start_scratch_server()
        if _server.cluster is not None:
            session.log(f"throwaway server: {_server.cluster.binaries.describe()}")
    database = _server.create_database(prefix)
    try:
        yield child_env(database)
    finally:
        _server.drop_database(database.name)


@nox.session
@nox.parametrize("db", list(LEGS))
def migrations(session: nox.Session, db: str) -> None:
    """Run the lifecycle with inv on a throwaway database: fresh or seeded from init.sql."""
    install(session, "-e", ".")
    with throwaway_database(session, f"uaip_nox_{db}") as env:
        for step in LEGS[db]:
            session.run("inv", *step, env=env)
        report = session.run("inv", "db.verify", "--json", env=env, silent=True)
    result = json.loads(str(report))
    head = history.load().single_head()
    wanted = expected.snapshot(head).digest()
    session.log(f"final schema fingerprint: {result['actual_digest']} (committed head: {wanted})")
    if result["revision"] != head or result["actual_digest"] != wanted:
        session.error(
            f"The {db} leg ended at {result['revision']} with fingerprint "
            f"{result['actual_digest']}, not head {head}'s committed {wanted}."
        )


def install(session: nox.Session, *args: str) -> None:
    """Install into the session's venv; with `nox --no-venv` the current environment is used."""
    if session.venv_backend != "none":
        session.install(*args)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the pytest suite against a throwaway PostgreSQL."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style (ruff), migrations (squawk and our rules) and that docs/schema/ is current."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("inv", "db.lint")
    session.run("inv", "db.docs", "--check")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the library, tasks, noxfile and migrations with mypy (strict)."""
    session.install("-e", ".[dev]")
    session.run("mypy")
