"""Database settings: the real environment, then `.env`, then the defaults of the migrations guide.

`DATABASE_URL` overrides the five `DB_*` variables. Passwords stay out of output: use
`display_url()` for people, `sqlalchemy_url()` for SQLAlchemy (built with `URL.create`, never by
joining strings) and `libpq_env()` for pg_dump/psql (passed through the environment, never on a
command line).
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from uaip_db import paths
from uaip_db.errors import SettingsError

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

DEFAULTS: dict[str, str] = {
    "DB_HOST": "localhost",
    "DB_PORT": "15432",
    "DB_NAME": "uaip_scoping",
    "DB_USER": "uaip_user",
    "DB_PASSWORD": "changeme",
    "DB_ENV": "development",
}
SETTING_NAMES = (*DEFAULTS, "DATABASE_URL")
ENVIRONMENTS = ("development", "ci", "production")
URL_SCHEMES = ("postgres", "postgresql")
CONNECT_TIMEOUT_SECONDS = 5
# Every connection works in the schema the project owns: a schema named after the role ("$user"
# comes first in PostgreSQL's default search_path), PGOPTIONS or a role's own search_path setting
# must not decide where tables are created or looked up.
PINNED_SEARCH_PATH = "public"
# What every session the tool opens sets at start-up (libpq's `options`, PGOPTIONS for client
# tools), over whatever the database or role sets (ALTER DATABASE ... SET DateStyle): the
# search_path above, and the output formats the tool parses. psycopg reads timestamps only in
# DateStyle ISO and intervals only in IntervalStyle postgres; extra_float_digits 3 gives floats
# exactly. TimeZone is left as the server has it: psycopg reads any offset, and times people
# see are shown as the server would show them; lc_monetary is never parsed.
SESSION_SETTINGS: dict[str, str] = {
    "search_path": PINNED_SEARCH_PATH,
    "DateStyle": "ISO,YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "3",
}
# Sessions that only read the catalog and the bookkeeping tables (db.check, db.verify, the lock)
# search nothing another role may create in: pg_catalog, then pg_temp last (issue 24).
CATALOG_SEARCH_PATH = "pg_catalog,pg_temp"
# libpq parameters a DATABASE_URL's query may set (none of them changes which database is used),
# with the environment variable libpq's client tools read for each. The keepalive and TCP
# timeout options have none: they reach Python's connections only, which hold the lock.
URL_OPTIONS: dict[str, str | None] = {
    "sslmode": "PGSSLMODE",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcompression": "PGSSLCOMPRESSION",
    "gssencmode": "PGGSSENCMODE",
    "channel_binding": "PGCHANNELBINDING",
    "requirepeer": "PGREQUIREPEER",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "keepalives": None,
    "keepalives_idle": None,
    "keepalives_interval": None,
    "keepalives_count": None,
    "tcp_user_timeout": None,
}


@dataclass(frozen=True)
class DatabaseConfig:
    host: str = DEFAULTS["DB_HOST"]
    port: int = int(DEFAULTS["DB_PORT"])
    name: str = DEFAULTS["DB_NAME"]
    user: str = DEFAULTS["DB_USER"]
    password: str = field(default=DEFAULTS["DB_PASSWORD"], repr=False)
    env: str = DEFAULTS["DB_ENV"]
    options: tuple[tuple[str, str], ...] = ()
    # Where these settings came from when not DB_* / DATABASE_URL (a fleet's target, say):
    # connection errors name it instead of telling the user to fix DB_PASSWORD.
    origin: str | None = field(default=None, compare=False)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        dotenv_path: Path | None = None,
    ) -> DatabaseConfig:
        """Settings from `environ` (default: os.environ) over `.env` over the defaults."""
        settings = resolve_settings(environ, dotenv_path)
        env = settings["DB_ENV"].strip().lower()
        if env not in ENVIRONMENTS:
            raise SettingsError(
                f"DB_ENV={settings['DB_ENV']!r} is not one of {', '.join(ENVIRONMENTS)}; "
                "fix it in your environment or .env."
            )
        if settings.get("DATABASE_URL"):
            return replace(parse_database_url(settings["DATABASE_URL"]), env=env)
        return cls(
            host=settings["DB_HOST"],
            port=parse_port(settings["DB_PORT"], "DB_PORT"),
            name=settings["DB_NAME"],
            user=settings["DB_USER"],
            password=settings["DB_PASSWORD"],
            env=env,
        )

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def with_database(self, name: str) -> DatabaseConfig:
        return replace(self, name=name)

    def sqlalchemy_url(self) -> URL:
        from sqlalchemy.engine import URL

        return URL.create(
            "postgresql+psycopg",
            username=self.user,
            password=self.password,
            host=self.host,
            port=self.port,
            database=self.name,
            query=dict(self.options),
        )

    def display_url(self) -> str:
        """The connection as people may see it: the password is never shown."""
        return f"postgresql://{self.user}:***@{self.host}:{self.port}/{self.name}"

    def where(self) -> str:
        return f"database {self.name!r} at {self.host}:{self.port}"

    def libpq_env(self) -> dict[str, str]:
        """Variables for libpq programs (psql, pg_dump): the password travels here, not in argv."""
        env = {
            "PGHOST": self.host,
            "PGPORT": str(self.port),
            "PGDATABASE": self.name,
            "PGUSER": self.user,
            "PGPASSWORD": self.password,
            "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT_SECONDS),
            "PGAPPNAME": "uaip-db",
            "PGOPTIONS": session_options(),
        }
        for key, value in self.options:
            variable = URL_OPTIONS.get(key)
            if variable:
                env[variable] = value
        return env

    def connect_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `psycopg.connect`."""
        return {
            "host": self.host,
            "port": self.port,
            "dbname": self.name,
            "user": self.user,
            "password": self.password,
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "application_name": "uaip-db",
            "options": session_options(),
            **dict(self.options),
        }


def session_options(**more: str) -> str:
    """libpq's `options` for a session: SESSION_SETTINGS, then `more` (e.g. lock_timeout)."""
    return " ".join(f"-c {name}={value}" for name, value in {**SESSION_SETTINGS, **more}.items())


# Where throwaway databases are made (backup proofs, rehearsals, round trips, snapshots, docs):
# read from the environment only, like the other UAIP_* settings.
SCRATCH_SETTING = "UAIP_SCRATCH"
SCRATCH_URL_SETTING = "UAIP_SCRATCH_URL"
TEST_SERVER_SETTING = "UAIP_TEST_SERVER"
SCRATCH_CHOICES = ("local", "env")


@dataclass(frozen=True)
class ScratchPlace:
    """Where throwaway databases are made: on the server of `admin` (a role that may create
    databases), or, when it is None, on a private server started from this machine's PostgreSQL
    binaries. `chosen_by` names the setting that chose it, for messages."""

    admin: DatabaseConfig | None
    chosen_by: str

    @property
    def is_local(self) -> bool:
        return self.admin is None


def scratch_place(environ: Mapping[str, str] | None = None) -> ScratchPlace:
    """`UAIP_SCRATCH_URL` (an admin connection), else `UAIP_SCRATCH` (`local`: a private server;
    `env`: the server and role the settings name), else `UAIP_TEST_SERVER=env` as `env`, else
    local."""
    environ = os.environ if environ is None else environ
    url = environ.get(SCRATCH_URL_SETTING, "").strip()
    choice = environ.get(SCRATCH_SETTING, "").strip().lower()
    if choice and choice not in SCRATCH_CHOICES:
        raise SettingsError(
            f"{SCRATCH_SETTING}={environ[SCRATCH_SETTING]!r} is not known; use local or env, or "
            f"name an admin connection in {SCRATCH_URL_SETTING}."
        )
    if url and choice:
        raise SettingsError(
            f"Both {SCRATCH_URL_SETTING} and {SCRATCH_SETTING} say where throwaway databases are "
            "made; unset one."
        )
    if url:
        # Its connection errors name the setting (the admin connection may fail mid-run too).
        admin = replace(parse_database_url(url, SCRATCH_URL_SETTING), origin=SCRATCH_URL_SETTING)
        return ScratchPlace(admin, SCRATCH_URL_SETTING)
    if not choice and environ.get(TEST_SERVER_SETTING, "").strip().lower() == "env":
        return ScratchPlace(DatabaseConfig.from_env(environ), f"{TEST_SERVER_SETTING}=env")
    if choice == "env":
        return ScratchPlace(DatabaseConfig.from_env(environ), f"{SCRATCH_SETTING}=env")
    return ScratchPlace(None, f"{SCRATCH_SETTING}={choice}" if choice else "the default")


RELEASE_BACKUPS_KEPT_SETTING = "UAIP_RELEASE_BACKUPS_KEPT"
DEFAULT_RELEASE_BACKUPS_KEPT = 3


def release_backups_kept(environ: Mapping[str, str] | None = None) -> int:
    """`UAIP_RELEASE_BACKUPS_KEPT`: how many release backups of a database `release.check` keeps
    (the newest; default 3), a whole number of 1 or more."""
    environ = os.environ if environ is None else environ
    value = environ.get(RELEASE_BACKUPS_KEPT_SETTING, "").strip()
    if not value:
        return DEFAULT_RELEASE_BACKUPS_KEPT
    if not value.isdigit() or int(value) < 1:
        raise SettingsError(
            f"{RELEASE_BACKUPS_KEPT_SETTING}={value!r} is not a whole number of 1 or more "
            "(the newest release backups of a database to keep)."
        )
    return int(value)


CONNECTION_NAMES = ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")


def resolve_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: Path | None = None
) -> dict[str, str]:
    """The raw setting strings: the environment, then `.env`, then the defaults.

    Empty values count as unset, with two exceptions that keep one rule, "the real environment
    wins": `DB_PASSWORD=` in the environment is an empty password (libpq's passfile may then
    supply one), and a connection setting present in the environment, even empty, means the
    connection is described there, so `.env`'s DATABASE_URL (which overrides the five) is not
    used. A child handed explicit settings therefore never falls back to a developer's `.env`.
    """
    environ = os.environ if environ is None else environ
    dotenv = read_dotenv(dotenv_path or paths.dotenv_file())
    if any(name in environ for name in CONNECTION_NAMES):
        dotenv.pop("DATABASE_URL", None)
    merged = dict(DEFAULTS)
    for source in (dotenv, environ):
        for name in SETTING_NAMES:
            value = source.get(name)
            if value is not None and value.strip() != "":
                merged[name] = value
    if environ.get("DB_PASSWORD") == "":
        merged["DB_PASSWORD"] = ""
    return merged


def read_dotenv(path: Path) -> dict[str, str]:
    """The settings in `.env`. A line that cannot be parsed is refused: passed over, as
    python-dotenv does with a warning, the setting it meant would silently fall back to its
    default, which may name another database."""
    if not path.is_file():
        return {}
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8")
        unreadable = [
            # a binding's text starts with the blank lines before it
            binding.original.line + _leading_newlines(binding.original.string)
            for binding in parse_stream(io.StringIO(text))
            if binding.error
        ]
    except (UnicodeDecodeError, OSError) as error:
        reason = "is not UTF-8 text" if isinstance(error, UnicodeDecodeError) else "cannot be read"
        raise SettingsError(f"{path} {reason}; fix or remove it.") from None
    if unreadable:  # before python-dotenv reads it: it would log its own warning first
        raise SettingsError(
            f"{path} line {unreadable[0]} is not a setting (NAME=value, with any quote it opens "
            "closed); fix or remove it."
        )
    values = dotenv_values(stream=io.StringIO(text))
    return {key: value for key, value in values.items() if value is not None}


def _leading_newlines(text: str) -> int:
    return text[: len(text) - len(text.lstrip())].count("\n")


def parse_port(value: str, source: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise SettingsError(
            f"{source}={value!r} is not a port number (1-65535); "
            "fix it in your environment or .env."
        )
    return port


def parse_database_url(url: str, setting: str = "DATABASE_URL") -> DatabaseConfig:
    """Parse `postgresql://user:password@host:port/name?option=value` (percent-encoded parts);
    `setting` is the variable that holds it, named in every message."""
    problem = f"{setting} is not a PostgreSQL URL"
    hint = "expected postgresql://USER:PASSWORD@HOST:PORT/NAME (percent-encode @ : / % # in parts)."
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.split("+", 1)[0]
        port_text = parts.port
    except ValueError:
        raise SettingsError(
            f"{problem}: its port is not a number from 1 to 65535, or a part holds an unencoded "
            f"@ : / # ; {hint}"
        ) from None
    if scheme not in URL_SCHEMES or not parts.netloc:
        raise SettingsError(f"{problem}; {hint}")
    name = unquote(parts.path.lstrip("/"))
    if not name or "/" in name:
        raise SettingsError(f"{problem}: it names no database; {hint}")
    options = tuple(parse_qsl(parts.query))
    for key, _value in options:
        if key not in URL_OPTIONS:
            raise SettingsError(
                f"{setting}'s query sets {key!r}, which could connect somewhere other than the "
                "URL names; put the host, port, user and database in the URL itself and drop it."
            )
    defaults = DatabaseConfig()
    return DatabaseConfig(
        host=unquote(parts.hostname or defaults.host),
        port=port_text or 5432,
        name=name,
        user=unquote(parts.username or defaults.user),
        password=unquote(parts.password or ""),
        options=options,
    )
