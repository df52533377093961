"""`inv db.up`, `db.down`, `db.status`: where the developer's database runs."""

from __future__ import annotations

# Task bodies import what only their own task needs (marked for ruff's PLC0415): at the top of cli/, these  # noqa: E501
# imports load the backups, release, fleet, docs and servers layers for every `inv` command,
# `inv --list` included (median of 15 runs on the shared 2 cores: 1.65 s against 0.89-1.12 s).
import json

from uaip_db import pg
from uaip_db.cli.reporter import Say, finish, say
from uaip_db.errors import USAGE, SettingsError
from uaip_db.migrations import history
from uaip_db.migrations.baseline import BASELINE_REVISION, adopt
from uaip_db.settings import CHECKED_BEFORE_ANY_COMMAND, DatabaseConfig


def server_up(backend: str | None = None, out: Say = say) -> None:
    from uaip_db.servers import choose_backend  # noqa: PLC0415

    config = DatabaseConfig.from_env()
    chosen = choose_backend(backend, report=out)
    out(chosen.up(config))
    if chosen.name == "docker":
        adopt_init_sql_database(config, out)


def adopt_init_sql_database(config: DatabaseConfig, out: Say = say) -> bool:
    """Record the baseline in a database a container built from init.sql, and say so."""
    if not adopt(config):
        return False
    out(
        f"The database was built from init.sql (schema v1.0.0, checked object by object); "
        f"recorded revision {BASELINE_REVISION}. `inv db.upgrade` brings it to head."
    )
    return True


def server_down(backend: str | None = None, out: Say = say) -> None:
    from uaip_db.servers import choose_backend  # noqa: PLC0415

    out(choose_backend(backend).down())


def status(*, as_json: bool = False, out: Say = say) -> None:
    from uaip_db.checks.status import database_state, effective_settings  # noqa: PLC0415
    from uaip_db.servers.binaries import wanted_major  # noqa: PLC0415
    from uaip_db.servers.docker import DockerCompose, docker_engine_answers  # noqa: PLC0415
    from uaip_db.servers.local import cluster_status, local_cluster_root  # noqa: PLC0415

    # Settings that name no database (DB_PORT=54x2) are what a status is asked for most: the
    # settings and servers are shown with the refused one marked, then the exit says it.
    config: DatabaseConfig | None = None
    unusable = ""
    try:
        config = DatabaseConfig.from_env()
        for setting in CHECKED_BEFORE_ANY_COMMAND:
            setting.read()
    except SettingsError as error:
        config, unusable = None, str(error)
    knobs = effective_settings()
    # Read from the cluster's files: showing the status never fetches binaries.
    servers = [cluster_status(local_cluster_root(), wanted_major())]
    if docker_engine_answers():
        servers.append(DockerCompose().status())
    state = database_state(config) if config is not None else None
    if as_json:
        shown = json.loads(state.to_json()) if state else {"reachable": False, "error": unusable}
        listed = [knob.to_json() for knob in knobs]
        out(json.dumps({**shown, "servers": servers, "settings": listed}, indent=2))
        if state is None or not state.reachable:
            finish(USAGE)
        return
    if config is not None:
        out(f"settings: {config.display_url()} (DB_ENV={config.env})")
    else:
        out("settings: one is refused (below)")
    changed = [knob for knob in knobs if not knob.is_default]
    if changed:
        out(
            f"  {len(changed)} of {len(knobs)} settings set, the others at their defaults (--json):"
        )
    else:
        out(f"  all {len(knobs)} settings at their defaults (docs/SETTINGS.md lists them)")
    for knob in changed:
        out(f"  {knob.summary()}")
    for line in servers:
        out(line)
    if state is None:
        out(f"database: not checked: {unusable}")
        finish(USAGE)
    if not state.reachable:
        out(f"database: {'busy' if state.busy else 'not reachable'}: {state.error}")
        finish(USAGE)  # the status is shown; the exit says the connection failed
    out(
        f"database: reachable, PostgreSQL {state.server_version}, "
        f"at {history.load().describe_current(tuple(state.current))}"
    )
    if state.unknown:
        out(f"pending: unknown: {', '.join(state.unknown)} is not in these migration scripts")
        return
    out(
        f"pending: {len(state.pending)} revision(s)"
        + "".join(f"\n  {item['revision']} {item['doc']}" for item in state.pending)
    )


def psql(command: str | None = None) -> None:
    """psql on the configured database (or run one command with it)."""
    from uaip_db import process  # noqa: PLC0415
    from uaip_db.servers.binaries import client_program  # noqa: PLC0415

    config = DatabaseConfig.from_env()
    program = client_program("psql")
    # Connect once first: a refused password or a missing database is our one line, not
    # psql's FATAL.
    with pg.connection(config):
        pass
    process.replace_with_tool([program, *(["-c", command] if command else [])], config)
