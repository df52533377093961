"""Roles with fewer rights than the test server's superuser, the way managed PostgreSQL hands
them out; each is dropped, with the databases it owns, when its block ends."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from urllib.parse import quote

from psycopg import sql

from uaip_db import pg
from uaip_db.servers.scratch import ScratchServer
from uaip_db.settings import DatabaseConfig


@contextmanager
def limited_role(server: ScratchServer, attributes: str = "NOCREATEDB") -> Iterator[DatabaseConfig]:
    """A LOGIN NOSUPERUSER role with `attributes` (default NOCREATEDB; e.g. "CREATEDB
    CONNECTION LIMIT 1"), as settings for the server's maintenance database."""
    role = f"uaip_role_{secrets.token_hex(3)}"
    password = "r@le:pw/%#' " + secrets.token_hex(4)
    admin = server.connection()
    admin.execute(
        sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER " + attributes + " PASSWORD {}").format(
            sql.Identifier(role), sql.Literal(password)
        )
    )
    try:
        yield replace(server.admin, user=role, password=password, name=pg.MAINTENANCE_DATABASE)
    finally:
        owned = admin.execute(
            "SELECT datname FROM pg_database WHERE datdba = (SELECT oid FROM pg_roles "
            "WHERE rolname = %s)",
            (role,),
        ).fetchall()
        for (name,) in owned:
            pg.drop_database(admin, str(name))
        admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def url(config: DatabaseConfig) -> str:
    """`config` as a postgresql:// URL, every part percent-encoded."""
    return (
        f"postgresql://{quote(config.user, safe='')}:{quote(config.password, safe='')}"
        f"@{config.host}:{config.port}/{quote(config.name, safe='')}"
    )
