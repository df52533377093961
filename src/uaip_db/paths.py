"""Where the repository's files are, whatever the working directory."""

from __future__ import annotations

import os
from pathlib import Path


def project_root() -> Path:
    """The repository root: `UAIP_DB_ROOT`, else the checkout this package was installed from."""
    configured = os.environ.get("UAIP_DB_ROOT")
    if configured:
        return Path(configured).resolve()
    return Path(__file__).resolve().parents[2]


def alembic_ini() -> Path:
    return project_root() / "alembic.ini"


def migrations_dir() -> Path:
    return project_root() / "migrations"


def versions_dir() -> Path:
    return migrations_dir() / "versions"


def init_sql() -> Path:
    return project_root() / "database" / "init.sql"


def dotenv_file() -> Path:
    return project_root() / ".env"


def backup_dir() -> Path:
    """`UAIP_BACKUP_DIR`, else backups/ in the checkout."""
    configured = os.environ.get("UAIP_BACKUP_DIR")
    return Path(configured).resolve() if configured else project_root() / "backups"


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
