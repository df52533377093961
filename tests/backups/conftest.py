"""Backup fixtures: a database full of rows, a name to restore into, a folder for backups."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from uaip_db import pg
from uaip_db.catalog.snapshot import Snapshot
from uaip_db.checks import sample_data
from uaip_db.servers.scratch import ScratchServer, start_scratch_server
from uaip_db.settings import DatabaseConfig

# Rows in each table that references no other (sessions today); tables with a foreign key get
# about FILL_PER_PARENT rows per referenced row. The fill reads the catalog at the database's own
# revision, so no column of any one version of the schema is named here: tests read what it made,
# never a constant.
FILL_ROWS = 200
FILL_PER_PARENT = 3


@pytest.fixture(scope="session")
def full_template(server: ScratchServer, head_template: str) -> str:
    """A database at head with rows in every table (hundreds, a few per parent row), cloned per
    test: enough for every path a backup takes, few enough that a dump and a restore are quick."""
    database = server.create_database("uaip_tpl_full", template=head_template)
    with psycopg.connect(**database.connect_kwargs(), autocommit=True) as conn:
        assert sample_data.fill_many(conn, FILL_ROWS, FILL_PER_PARENT) == []
        conn.execute("ANALYZE")
    server.mark_template(database.name)
    return database.name


@pytest.fixture
def full_db(server: ScratchServer, full_template: str) -> Iterator[DatabaseConfig]:
    database = server.create_database(template=full_template)
    yield database
    server.drop_database(database.name)


@pytest.fixture
def new_target(server: ScratchServer) -> Iterator[DatabaseConfig]:
    """A database name on the server that does not exist yet (dropped after the test)."""
    name = f"uaip_restored_{os.urandom(4).hex()}"
    yield server.config_for(name)
    server.drop_database(name)


@pytest.fixture
def backups(tmp_path: Path) -> Path:
    return tmp_path / "backups"


def hashes(database: DatabaseConfig) -> dict[str, sample_data.TableRows]:
    with psycopg.connect(**database.connect_kwargs(), autocommit=True) as conn:
        return sample_data.table_hashes(conn)


def one_row_fewer(row_counts: dict[str, int]) -> tuple[str, dict[str, int]]:
    """A manifest's row counts with one row fewer in its fullest table: a lie a restore catches."""
    table = max(sorted(row_counts), key=lambda name: row_counts[name])
    return table, dict(row_counts, **{table: row_counts[table] - 1})


def exists(server: ScratchServer, name: str) -> bool:
    row = (
        server.connection()
        .execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
        .fetchone()
    )
    return row is not None and row[0] == 1


def cut_manifest(backup: Path) -> None:
    """Damage a backup the way a full disk or a killed copy does: its manifest.json cut short."""
    (backup / "manifest.json").write_text('{"format_version": 1, "datab')


def tamper(path: Path, how: Callable[[bytes], bytes]) -> None:
    path.write_bytes(how(path.read_bytes()))


def flip_one_byte(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0x01]) + data[middle + 1 :]


def take_snapshot(folder: Path) -> Snapshot:
    return Snapshot.from_json((folder / "schema.json").read_text())


def rewrite_manifest(folder: Path, **changes: object) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.fixture
def other_owner(server: ScratchServer) -> Iterator[DatabaseConfig]:
    """Settings of a role that is no superuser and owns a database it is yet to create."""
    role, password = f"uaip_owner_{os.urandom(3).hex()}", "s3cret p@ss:'%"
    admin = server.connection()
    admin.execute(
        psycopg.sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD {}").format(
            psycopg.sql.Identifier(role), psycopg.sql.Literal(password)
        )
    )
    owner = DatabaseConfig(
        host=server.admin.host,
        port=server.admin.port,
        name=f"{role}_db",
        user=role,
        password=password,
    )
    try:
        yield owner
    finally:
        server.drop_database(owner.name)
        admin.execute(
            psycopg.sql.SQL("DROP ROLE IF EXISTS {}").format(psycopg.sql.Identifier(role))
        )


@pytest.fixture
def namesake(head_db: DatabaseConfig) -> Iterator[DatabaseConfig]:
    """An empty database of `head_db`'s name on a second private server: another database."""
    other = start_scratch_server()
    try:
        if other.cluster is None:
            pytest.skip("needs a second private server (UAIP_TEST_SERVER=env gives one server)")
        pg.create_database(other.connection(), head_db.name)
        yield other.config_for(head_db.name)
    finally:
        other.close()
