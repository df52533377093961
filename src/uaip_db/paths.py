"""Where the repository's files are, whatever the working directory (the checkout itself,
`UAIP_DB_ROOT` or the one the package is installed from, is a setting: settings.project_root)."""

from __future__ import annotations

from pathlib import Path

from uaip_db import settings
from uaip_db.settings import dotenv_file as dotenv_file
from uaip_db.settings import project_root as project_root


def alembic_ini() -> Path:
    return project_root() / "alembic.ini"


def migrations_dir() -> Path:
    return project_root() / "migrations"


def versions_dir() -> Path:
    return migrations_dir() / "versions"


def init_sql() -> Path:
    return project_root() / "database" / "init.sql"


def backup_dir() -> Path:
    """`UAIP_BACKUP_DIR`, else backups/ in the checkout."""
    configured: Path | None = settings.BACKUP_DIR.read()
    return configured or project_root() / "backups"


def release_backup_dir() -> Path:
    """Where `release.check` keeps its backups (pruned to UAIP_RELEASE_BACKUPS_KEPT a database):
    release/ in the backup folder, apart from the backups people take."""
    return backup_dir() / "release"


def reports_dir() -> Path:
    return project_root() / "reports"


def workload_dir() -> Path:
    """workload/: the application's statements, as pgbench scripts the rehearsal runs."""
    return project_root() / "workload"


def local_cluster_dir() -> Path:
    return project_root() / ".pgdata"
