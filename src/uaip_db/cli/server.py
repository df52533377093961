"""`inv db.up`, `db.down`, `db.status`: where the developer's database runs."""

from __future__ import annotations

from uaip_db.cli.reporter import Say, say
from uaip_db.errors import UaipDbError
from uaip_db.migrations import history, runner
from uaip_db.migrations.baseline import BASELINE_REVISION, adopt
from uaip_db.settings import DatabaseConfig


def server_up(backend: str | None = None, out: Say = say) -> None:
    from uaip_db.servers import choose_backend

    config = DatabaseConfig.from_env()
    chosen = choose_backend(backend)
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
    from uaip_db.servers import choose_backend

    out(choose_backend(backend).down())


def status(out: Say = say) -> None:
    from uaip_db.servers.docker import DockerCompose, docker_engine_answers
    from uaip_db.servers.local import LocalCluster, find_bindir

    config = DatabaseConfig.from_env()
    out(f"settings: {config.display_url()} (DB_ENV={config.env})")
    if find_bindir() is not None:
        out(LocalCluster().status())
    if docker_engine_answers():
        out(DockerCompose().status())
    try:
        current = runner.current_revisions(config)
    except UaipDbError as error:
        out(f"database: not reachable: {error}")
        return
    index = history.load()
    out(f"database: reachable, at {index.describe_current(current)}")
    unknown = [revision for revision in current if index.get(revision) is None]
    if unknown:
        out(f"pending: unknown: {', '.join(unknown)} is not in these migration scripts")
        return
    pending = index.pending(current)
    out(
        f"pending: {len(pending)} revision(s)"
        + "".join(f"\n  {s.revision} {s.doc}" for s in pending)
    )
