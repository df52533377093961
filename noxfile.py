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
from uaip_db.servers.binaries import RELEASES, VERSION_SETTING, wanted_major  # noqa: E402
from uaip_db.servers.scratch import (  # noqa: E402
    ScratchServer,
    child_env,
    start_scratch_server,
    wants_existing_server,
)
from uaip_db.settings import PG_BINDIR  # noqa: E402

# Bare `nox` runs these, cheapest first, so a lint slip fails in seconds.
nox.options.sessions = ["lint", "typecheck", "tests", "migrations", "walks", "docker"]
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
# The PostgreSQL majors each leg runs on: every pinned release (servers.binaries); 16 is the one
# the schema targets.
PG_MAJORS = [str(major) for major in RELEASES]
_servers: dict[str, ScratchServer] = {}


def throwaway_server(session: nox.Session, pg: str) -> ScratchServer:
    """The run's throwaway server of PostgreSQL `pg`, started on first use, stopped at exit."""
    if pg not in _servers:
        _servers[pg] = start_scratch_server(int(pg))
        cluster = _servers[pg].cluster
        if cluster is not None:
            session.log(f"throwaway server: {cluster.binaries.describe()}")
    return _servers[pg]


@contextmanager
def throwaway_database(session: nox.Session, pg: str, prefix: str) -> Iterator[dict[str, str]]:
    """A new database on the throwaway server of PostgreSQL `pg`, as child-process settings
    (the steps' own throwaway servers and client tools run `pg` too); dropped after."""
    server = throwaway_server(session, pg)
    database = server.create_database(prefix)
    try:
        yield {**child_env(database), VERSION_SETTING: pg}
    finally:
        server.drop_database(database.name)


@nox.session
@nox.parametrize("db", list(LEGS))
@nox.parametrize("pg", PG_MAJORS)
def migrations(session: nox.Session, pg: str, db: str) -> None:
    """Run the lifecycle with inv on a throwaway database: fresh or seeded, PostgreSQL 15-17.

    Every leg ends checked against the committed head snapshot, so one leg run alone proves as
    much; `nox -s migrations` runs them all."""
    if (PG_BINDIR.read() or wants_existing_server()) and pg != str(wanted_major()):
        session.skip(
            f"PG_BINDIR or UAIP_TEST_SERVER=env chooses the server: the pg='{wanted_major()}' "
            "legs run on it, the others are skipped"
        )
    install(session, "-e", ".")
    with throwaway_database(session, pg, f"uaip_nox_{db}") as env:
        for step in LEGS[db]:
            session.run("inv", *step, env=env)
        report = session.run("inv", "db.verify", "--json", env=env, silent=True)
    result = json.loads(str(report))
    head = history.load().single_head()
    wanted = expected.snapshot(head).digest()
    session.log(f"final schema fingerprint: {result['actual_digest']} (committed head: {wanted})")
    if result["revision"] != head or result["actual_digest"] != wanted:
        session.error(
            f"The {db} leg on PostgreSQL {pg} ended at {result['revision']} with fingerprint "
            f"{result['actual_digest']}, not head {head}'s committed {wanted}."
        )


def install(session: nox.Session, *args: str) -> None:
    """Install into the session's venv; with `nox --no-venv` the current environment is used."""
    if session.venv_backend != "none":
        session.install(*args)


@nox.session
def tests(session: nox.Session) -> None:
    """Run the pytest suite against a throwaway PostgreSQL (the walks are `nox -s walks`)."""
    session.install("-e", ".[dev]")
    session.run("pytest", *session.posargs)


@nox.session
def walks(session: nox.Session) -> None:
    """Run the long end-to-end walks (`pytest -m walk`), such as writing the next migration.

    Each takes minutes (nox or a nested pytest on a copy of the checkout), so the plain `pytest`
    leaves them out and this session, which CI runs, runs each once."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-m", "walk", *session.posargs)


@nox.session
def docker(session: nox.Session) -> None:
    """Run the Docker tests (`pytest -m docker`) against the engine at DOCKER_HOST.

    The runner image, the compose flows and `db.up --backend docker` (tests/docker/). They take
    turns on one container name, so the plain `pytest` leaves them out and this session, which
    CI runs, runs them once. Without an engine they are skipped, unless UAIP_REQUIRE_DOCKER is
    on."""
    session.install("-e", ".[dev]")
    session.run("pytest", "-m", "docker", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Check style, migrations, docs/schema/, scripts/, workflows, compose and Kubernetes files.

    ruff; squawk and our rules; docs/schema/ is current; shellcheck, check-jsonschema, zizmor and
    kubernetes-validate, all offline."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")  # the layers of docs/ARCHITECTURE.md: no upward import
    session.run("inv", "db.lint")
    session.run("inv", "db.docs", "--check")
    # scripts/, workflows, compose: POSIX sh; schemas bundled with check-jsonschema; no medium or
    # high zizmor finding (unpinned actions, broad permissions, persisted credentials).
    scripts = sorted(str(p) for p in (ROOT / "scripts").rglob("*") if p.is_file())
    session.run("shellcheck", "--shell=sh", "--external-sources", *scripts)
    workflows = sorted(str(p) for p in (ROOT / ".github" / "workflows").glob("*.yml"))
    session.run("check-jsonschema", "--builtin-schema", "vendor.github-workflows", *workflows)
    session.run("zizmor", "--offline", "--min-severity", "medium", ".github/workflows/")
    session.run("check-jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml")
    session.run("kubernetes-validate", "--strict", "deploy/kubernetes/fleet-upgrade-job.yaml")


@nox.session
def typecheck(session: nox.Session) -> None:
    """Type-check the library, tasks, noxfile and migrations with mypy (strict)."""
    session.install("-e", ".[dev]")
    session.run("mypy")
