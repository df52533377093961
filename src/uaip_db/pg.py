"""Connections to the configured database, and connection failures told in plain words."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from uaip_db.errors import ConnectionProblem
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    import psycopg


def explain(error: BaseException, config: DatabaseConfig) -> ConnectionProblem:
    """Turn a driver error into one or two lines with a way out; the password never appears."""
    message = str(getattr(error, "orig", None) or error)
    lowered = message.lower()
    where = config.where()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return ConnectionProblem(
            f"Cannot connect to {where} as {config.user}: the password was refused. "
            "Check DB_PASSWORD (or DATABASE_URL) in your environment or .env."
        )
    if "does not exist" in lowered and "database" in lowered:
        return ConnectionProblem(
            f"The {where} does not exist. Create it (`inv db.up` makes it on a local server) "
            "or fix DB_NAME."
        )
    if "role" in lowered and "does not exist" in lowered:
        return ConnectionProblem(
            f"The role {config.user!r} does not exist on {config.host}:{config.port}; fix DB_USER."
        )
    if (
        "could not translate host name" in lowered
        or "name or service not known" in lowered
        or "temporary failure in name resolution" in lowered
        or "nodename nor servname" in lowered
    ):
        return ConnectionProblem(f"Unknown host {config.host!r}; fix DB_HOST (or DATABASE_URL).")
    if "connection refused" in lowered or "timeout expired" in lowered or "no route" in lowered:
        return ConnectionProblem(
            f"No PostgreSQL server answers at {config.host}:{config.port}. Start one with "
            "`inv db.up`, or point DB_HOST/DB_PORT at a running server."
        )
    return ConnectionProblem(f"Cannot use {where}: {first_line(scrub(message, config))}")


def scrub(text: str, config: DatabaseConfig) -> str:
    if config.password:
        text = text.replace(config.password, "***")
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


def first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return "unknown error"


def connect(config: DatabaseConfig, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    import psycopg

    try:
        return psycopg.connect(**config.connect_kwargs(), autocommit=autocommit)
    except psycopg.OperationalError as error:
        raise explain(error, config) from None


@contextmanager
def connection(
    config: DatabaseConfig, *, autocommit: bool = True
) -> Iterator[psycopg.Connection[Any]]:
    conn = connect(config, autocommit=autocommit)
    try:
        yield conn
    finally:
        conn.close()
