"""Connections, connection failures told in plain words, and database administration
(create, drop, exists, is it empty): the one place that runs CREATE/DROP DATABASE."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from uaip_db.errors import (
    ConnectionProblem,
    DatabaseBusy,
    DatabaseMissing,
    PasswordRefused,
    UnusableDatabase,
)
from uaip_db.settings import (
    APPLICATION_NAME,
    CATALOG_SEARCH_PATH,
    READ_LOCK_WAIT,
    DatabaseConfig,
    session_options,
)

if TYPE_CHECKING:
    import psycopg


class Failure(Enum):
    """The connection failures explained in plain words."""

    PASSWORD_REFUSED = "password refused"
    DATABASE_MISSING = "database missing"
    ROLE_MISSING = "role missing"
    UNKNOWN_HOST = "unknown host"
    NO_SERVER = "no server"


# What the server says, by SQLSTATE: its words depend on lc_messages, its codes do not.
FAILURE_CODES = {
    "28P01": Failure.PASSWORD_REFUSED,  # invalid_password
    "3D000": Failure.DATABASE_MISSING,  # invalid_catalog_name
}


def failure_of(error: BaseException | str) -> Failure | None:
    """The failure `error` is: by its SQLSTATE when it has one (any error the server sent on an
    open connection), else by the words of libpq's message (a failed connection: libpq exposes
    no SQLSTATE for it, measured with psycopg 3.3, whatever the server sent; its own words, such
    as "connection refused", are libpq's; the server's startup FATALs are matched as a last
    resort and are English unless the server's own lc_messages says otherwise)."""
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate is not None:
        return FAILURE_CODES.get(sqlstate)
    lowered = str(error).lower()
    if "password authentication failed" in lowered or "no password supplied" in lowered:
        return Failure.PASSWORD_REFUSED
    if 'database "' in lowered and "does not exist" in lowered:
        return Failure.DATABASE_MISSING
    if 'role "' in lowered and "does not exist" in lowered:
        return Failure.ROLE_MISSING
    if (
        "could not translate host name" in lowered
        or "name or service not known" in lowered
        or "temporary failure in name resolution" in lowered
        or "nodename nor servname" in lowered
    ):
        return Failure.UNKNOWN_HOST
    if "connection refused" in lowered or "timeout expired" in lowered or "no route" in lowered:
        return Failure.NO_SERVER
    return None


def in_few_words(failure: Failure, config: DatabaseConfig) -> str:
    return {
        Failure.PASSWORD_REFUSED: "the password was refused",
        Failure.DATABASE_MISSING: f"database {config.name!r} does not exist",
        Failure.ROLE_MISSING: f"role {config.user!r} does not exist",
        Failure.UNKNOWN_HOST: f"unknown host {config.host!r}",
        Failure.NO_SERVER: "no PostgreSQL server answers there",
    }[failure]


def problem_class(failure: Failure | None) -> type[ConnectionProblem]:
    if failure is Failure.PASSWORD_REFUSED:
        return PasswordRefused
    if failure is Failure.DATABASE_MISSING:
        return DatabaseMissing
    return ConnectionProblem


def explain(
    error: BaseException, config: DatabaseConfig, setting: str | None = None
) -> ConnectionProblem:
    """Turn a driver error into one or two lines with a way out; the password never appears.
    With `setting`, the connection is the one that setting names (not DB_*), and it is blamed."""
    cause = getattr(error, "orig", None) or error
    message = str(cause)
    failure = failure_of(cause)
    problem = problem_class(failure)
    where = config.where()
    setting = setting or config.origin
    if setting is not None:
        said = in_few_words(failure, config) if failure else first_line(scrub(message, config))
        return problem(
            f"Cannot connect to {config.host}:{config.port} as {config.user}, which {setting} "
            f"names: {said}. Fix {setting}."
        )
    if failure is Failure.PASSWORD_REFUSED:
        return problem(
            f"Cannot connect to {where} as {config.user}: the password was refused. "
            "Check DB_PASSWORD (or DATABASE_URL) in your environment or .env."
        )
    if failure is Failure.DATABASE_MISSING:
        return problem(
            f"The {where} does not exist. Create it (`inv db.up` makes it on a local server) "
            "or fix DB_NAME."
        )
    if failure is Failure.ROLE_MISSING:
        return problem(
            f"The role {config.user!r} does not exist on {config.host}:{config.port}; fix DB_USER."
        )
    if failure is Failure.UNKNOWN_HOST:
        return problem(f"Unknown host {config.host!r}; fix DB_HOST (or DATABASE_URL).")
    if failure is Failure.NO_SERVER:
        return problem(
            f"No PostgreSQL server answers at {config.host}:{config.port}. Start one with "
            "`inv db.up`, or point DB_HOST/DB_PORT at a running server."
        )
    hint = getattr(getattr(error, "diag", None), "message_hint", None)
    said = first_line(scrub(message, config)) + (f" (HINT: {hint})" if hint else "")
    return problem(f"Cannot use {where}: {said}")


def scrub(text: str, config: DatabaseConfig) -> str:
    if config.password:
        text = text.replace(config.password, "***")
    return re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", text)


def first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()
    return "unknown error"


# libpq variables a caller's environment may carry that would change where a connection goes or
# how it behaves (PGSERVICE, PGHOSTADDR, PGOPTIONS, PGDATABASE, ...): all PG* but the passfile,
# which may still supply a password where the settings have none.
KEPT_LIBPQ_VARIABLES = frozenset({"PGPASSFILE"})


def is_libpq_variable(name: str) -> bool:
    return name.startswith("PG") and name not in KEPT_LIBPQ_VARIABLES


def child_environment(config: DatabaseConfig | None = None) -> dict[str, str]:
    """This process's environment without the caller's libpq variables, plus `config`'s own
    (password included): what every child process, client tool or not, is given."""
    clean = {name: value for name, value in os.environ.items() if not is_libpq_variable(name)}
    return {**clean, **(config.libpq_env() if config else {})}


@contextmanager
def without_libpq_environment() -> Iterator[None]:
    """libpq reads PG* variables at connect time for any parameter not given explicitly (and
    PGSERVICE even for a whole service): hide them while our own connections are made."""
    hidden = {name: value for name, value in os.environ.items() if is_libpq_variable(name)}
    for name in hidden:
        del os.environ[name]
    try:
        yield
    finally:
        os.environ.update(hidden)


def connect(
    config: DatabaseConfig, *, autocommit: bool = True, setting: str | None = None, **extra: str
) -> psycopg.Connection[Any]:
    """A connection to exactly `config`'s database: explicit parameters, the caller's libpq
    variables ignored, search_path pinned (`extra` may add libpq parameters, e.g. options).
    `setting` names where `config` came from when that is not DB_* (see `explain`)."""
    import psycopg  # noqa: PLC0415

    parameters = {**config.connect_kwargs(), **extra}
    try:
        with without_libpq_environment():
            conn = psycopg.connect(**parameters, autocommit=autocommit)
    except psycopg.OperationalError as error:
        raise explain(error, config, setting) from None
    encoding = conn.info.parameter_status("server_encoding")
    if encoding in UNUSABLE_ENCODINGS and config.name != MAINTENANCE_DATABASE:
        conn.close()
        # SQL_ASCII stores bytes, not text: migrations, checks and backups cannot trust it.
        raise UnusableDatabase(
            f"The {config.where()} uses the {encoding} encoding, which cannot hold the "
            "schema's text; create the database with ENCODING 'UTF8' (and restore into it)."
        )
    return conn


@contextmanager
def connection(
    config: DatabaseConfig, *, autocommit: bool = True
) -> Iterator[psycopg.Connection[Any]]:
    conn = connect(config, autocommit=autocommit)
    try:
        yield conn
    finally:
        conn.close()


@contextmanager
def reading(config: DatabaseConfig) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection for reading only, on the catalog's search_path (nothing another
    role may create in): a lock not granted within UAIP_READ_LOCK_WAIT (a table lock or
    alembic_version's, which a migration holds) ends the look with DatabaseBusy, naming the
    session that holds it instead of waiting without end."""
    import psycopg  # noqa: PLC0415

    wait = READ_LOCK_WAIT.read()
    conn = connect(
        config, options=session_options(search_path=CATALOG_SEARCH_PATH, lock_timeout=wait)
    )
    try:
        yield conn
    except psycopg.errors.LockNotAvailable:
        raise DatabaseBusy(
            f"Could not read the {config.where()}: a lock it needs was not granted within "
            f"{wait} ({READ_LOCK_WAIT.name}); {lock_holder(config)}. Run it again when that "
            "transaction ends."
        ) from None
    finally:
        conn.close()


@contextmanager
def catalog_connection(
    config: DatabaseConfig, *, application_name: str = APPLICATION_NAME
) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection whose search_path holds nothing another role may create in
    (pg_catalog, pg_temp): for reading the catalog and the bookkeeping tables (issue 24).
    `application_name` is what pg_stat_activity (and a lock holder's message) shows for it."""
    conn = connect(
        config,
        options=session_options(search_path=CATALOG_SEARCH_PATH),
        application_name=application_name,
    )
    try:
        yield conn
    finally:
        conn.close()


LOCK_HOLDER = """
SELECT a.pid, coalesce(nullif(a.application_name, ''), 'unknown program'),
       coalesce(host(a.client_addr), 'local socket'),
       to_char(coalesce(a.xact_start, a.backend_start) AT TIME ZONE 'UTC',
               'YYYY-MM-DD HH24:MI:SS "UTC"'),
       l.mode, l.granted,
       coalesce(quote_ident(n.nspname) || '.' || quote_ident(c.relname), l.relation::text)
FROM pg_locks AS l
JOIN pg_stat_activity AS a ON a.pid = l.pid
LEFT JOIN pg_class AS c ON c.oid = l.relation
LEFT JOIN pg_namespace AS n ON n.oid = c.relnamespace
WHERE l.locktype = 'relation' AND l.mode = 'AccessExclusiveLock' AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY l.granted DESC, a.xact_start NULLS LAST
LIMIT 1
"""


def lock_holder(config: DatabaseConfig) -> str:
    """Who holds (or, first in the queue, waits for) the ACCESS EXCLUSIVE lock that keeps reads
    of `config`'s database waiting: the only mode that conflicts with what a read takes."""
    try:
        with catalog_connection(config) as conn:
            row = conn.execute(LOCK_HOLDER).fetchone()
    except Exception:  # the answer only words the message: a failure to ask changes nothing
        row = None
    if row is None:
        return "the session that held it has since let go"
    pid, program, client, since, mode, granted, relation = row
    who = f"pid {pid} ({program} from {client}, in a transaction since {since})"
    if granted:
        return f"{who} holds {mode} on {relation}"
    return f"{who} waits for {mode} on {relation}, and reads queue behind it"


MAINTENANCE_DATABASE = "postgres"


def invalid_indexes(conn: psycopg.Connection[Any]) -> list[str]:
    """Indexes left INVALID (a CONCURRENTLY build or drop that failed half-way)."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_index AS i JOIN pg_class AS c ON c.oid = i.indexrelid "
        "WHERE NOT i.indisvalid AND c.relnamespace = 'public'::regnamespace ORDER BY 1"
    ).fetchall()
    return [row[0] for row in rows]


@contextmanager
def admin_connection(config: DatabaseConfig) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the server's maintenance database, as `config`'s role."""
    with connection(config.with_database(MAINTENANCE_DATABASE)) as conn:
        yield conn


def database_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
    )


@dataclass(frozen=True)
class DatabaseLocale:
    """A database's encoding, collation and character classification (libc names)."""

    encoding: str
    collate: str
    ctype: str


# Encodings that cannot hold the schema's text: bytes without a character set.
UNUSABLE_ENCODINGS = frozenset({"SQL_ASCII"})


def database_locale(conn: psycopg.Connection[Any]) -> DatabaseLocale:
    row = conn.execute(
        "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
        "WHERE datname = current_database()"
    ).fetchone()
    assert row is not None
    return DatabaseLocale(str(row[0]), str(row[1]), str(row[2]))


def create_database(
    conn: psycopg.Connection[Any],
    name: str,
    *,
    owner: str | None = None,
    template: str | None = None,
    file_copy: bool = False,
    locale: DatabaseLocale | None = None,
) -> None:
    """CREATE DATABASE with identifiers quoted; `file_copy` clones a template fastest; `locale`
    (with template0) gives it another database's encoding, collation and ctype."""
    from psycopg import sql  # noqa: PLC0415

    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if owner:
        statement += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
    if template:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    if locale:
        statement += sql.SQL(" ENCODING {} LC_COLLATE {} LC_CTYPE {}").format(
            sql.Literal(locale.encoding), sql.Literal(locale.collate), sql.Literal(locale.ctype)
        )
    if file_copy:
        statement += sql.SQL(" STRATEGY FILE_COPY")
    conn.execute(statement)


def drop_database(conn: psycopg.Connection[Any], name: str) -> None:
    """DROP DATABASE IF EXISTS, ending any session still connected to it."""
    from psycopg import sql  # noqa: PLC0415

    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def set_template(conn: psycopg.Connection[Any], name: str, is_template: bool) -> None:
    """Mark (or unmark) a database as a template; a template with open sessions cannot be cloned,
    so marking it ends them."""
    from psycopg import sql  # noqa: PLC0415

    if is_template:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
    conn.execute(
        sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE {}").format(
            sql.Identifier(name), sql.Literal(is_template)
        )
    )


STANDBY = "is a hot standby (read-only, in recovery)"


def read_only_reason(conn: psycopg.Connection[Any]) -> str | None:
    """Why nothing can be written through `conn` (a hot standby, or read-only transactions by
    default), or None when it can be."""
    row = conn.execute(
        "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only') = 'on'"
    ).fetchone()
    if row and row[0]:
        return STANDBY
    if row and row[1]:
        return "is read-only (default_transaction_read_only is on)"
    return None


def may_create_databases(conn: psycopg.Connection[Any]) -> bool:
    """Whether the role of `conn` may run CREATE DATABASE (CREATEDB, or a superuser)."""
    row = conn.execute(
        "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    return bool(row and row[0])


def system_identifier(conn: psycopg.Connection[Any]) -> str | None:
    """The server's system identifier (`pg_control_system()`), the same for the life of its data
    directory; None when this role may not read it."""
    row = conn.execute(
        "SELECT CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE') "
        "THEN (SELECT system_identifier::text FROM pg_control_system()) END"
    ).fetchone()
    return str(row[0]) if row and row[0] is not None else None


def database_oid(conn: psycopg.Connection[Any]) -> int | None:
    """The oid of the database `conn` is connected to: a dropped and recreated namesake differs."""
    row = conn.execute(
        "SELECT oid::bigint FROM pg_database WHERE datname = current_database()"
    ).fetchone()
    return int(row[0]) if row else None


def database_flags(conn: psycopg.Connection[Any], name: str) -> tuple[bool, bool] | None:
    """(is a template, accepts connections) for database `name`, or None when it does not exist."""
    row = conn.execute(
        "SELECT datistemplate, datallowconn FROM pg_database WHERE datname = %s", (name,)
    ).fetchone()
    return (bool(row[0]), bool(row[1])) if row else None


# NAMEDATALEN - 1: PostgreSQL silently cuts a longer name (at a character boundary), so two names
# that differ only past it would be one database.
MAX_NAME_BYTES = 63


def fitted_name(base: str, suffix: str) -> str:
    """`base` + `suffix` in at most 63 bytes (UTF-8): `base` shortened at a character boundary,
    `suffix` (what makes the name unique) kept whole."""
    room = max(MAX_NAME_BYTES - len(suffix.encode()), 0)
    return base.encode()[:room].decode(errors="ignore") + suffix


def like_pattern(prefix: str = "", infix: str = "") -> str:
    """A LIKE pattern for names starting with `prefix` or holding `infix` (`_` taken literally)."""
    literal = (prefix or infix).replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
    return f"{literal}%" if prefix else f"%{literal}%"


def databases_like(conn: psycopg.Connection[Any], patterns: Sequence[str]) -> list[str]:
    """The names of databases (templates aside) matching any of the LIKE `patterns`, sorted."""
    rows = conn.execute(
        "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname LIKE ANY(%s) "
        "ORDER BY 1",
        (list(patterns),),
    ).fetchall()
    return [str(row[0]) for row in rows]


def conninfo_dbname(name: str) -> str:
    """`dbname='...'` for pg_restore --dbname: a name with `=` is never read as a conninfo."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"
