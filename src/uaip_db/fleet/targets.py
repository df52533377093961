"""The fleet's targets file (TOML): an optional `[defaults]` table, one `[[targets]]` per database.

    [defaults]
    host = "db.internal"
    user = "migrator"
    password_env = "FLEET_DB_PASSWORD"

    [[targets]]
    name = "tenant-a"
    dbname = "uaip_tenant_a"

Each target takes `name` (required, unique) and libpq's connection fields: `host`, `port`, `user`,
`dbname`, `sslmode`, or `service` (an entry of a pg_service.conf, read from `service_file` or
`~/.pg_service.conf`). Fields the file sets (the target's own, then `[defaults]`) win over the
service entry, as libpq's explicit parameters do. `password_env` names the environment variable
that holds the password; without it libpq's passfile may supply one. A password never lives in
the file. Everything is checked before any connection is made, and a mistake names its line.

The caller's libpq variables (PGSERVICE, PGSERVICEFILE, PGHOST, ...) are never read: a target's
connection is exactly what the file says.
"""

from __future__ import annotations

import configparser
import hashlib
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uaip_db.errors import FileRefused, SettingsError, UsageError
from uaip_db.files import read_settings_file
from uaip_db.settings import URL_OPTIONS, DatabaseConfig, named_variable

CONNECTION_FIELDS = ("host", "port", "user", "dbname", "sslmode")
TARGET_KEYS = frozenset({"name", *CONNECTION_FIELDS, "service", "service_file", "password_env"})
DEFAULT_KEYS = TARGET_KEYS - {"name"}
TOP_LEVEL_KEYS = frozenset({"defaults", "targets"})
DEFAULT_PORT = 5432
DEFAULT_SERVICE_FILE = Path("~/.pg_service.conf")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# A service entry may set what the file may set, and the libpq options that change how, not where,
# a connection is made. Anything else (hostaddr, options, another service) could redirect it.
SERVICE_KEYS = frozenset({"host", "port", "user", "dbname"}) | frozenset(URL_OPTIONS)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
VARIABLE_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Target:
    """One database of the fleet, as the file describes it (no password: only where to find one)."""

    name: str
    line: int
    host: str
    port: int
    user: str
    dbname: str
    password_env: str | None = None
    options: tuple[tuple[str, str], ...] = ()
    service: str | None = None

    def config(self, environ: Mapping[str, str] | None, env: str) -> DatabaseConfig:
        """The connection: explicit host, port, user and database; the password from
        `password_env` in `environ` (default: this process's environment; empty without one,
        so that libpq's passfile may supply it)."""
        password = ""
        if self.password_env is not None:
            found = named_variable(self.password_env, environ)
            if found is None:
                raise SettingsError(
                    f"Target {self.name!r} (line {self.line}) takes its password from "
                    f"${self.password_env}, which is not set; export it and run again."
                )
            password = found
        return DatabaseConfig(
            host=self.host,
            port=self.port,
            name=self.dbname,
            user=self.user,
            password=password,
            env=env,
            options=self.options,
            origin=f"target {self.name!r} (line {self.line})",
        )


@dataclass(frozen=True)
class TargetsFile:
    path: Path
    targets: tuple[Target, ...]

    def names(self) -> list[str]:
        return [target.name for target in self.targets]


def load(path: Path | str) -> TargetsFile:
    """Read and check the whole file; SettingsError (exit 2) naming the line of a problem."""
    path = Path(path)
    try:
        text = read_settings_file(path).decode("utf-8")
    except FileNotFoundError:
        raise UsageError(f"Targets file {path} does not exist; pass --targets FILE.") from None
    except FileRefused as error:
        raise SettingsError(
            f"Targets file {path} {error.reason}; name a TOML file of at most 1 MiB."
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        reason = "is not UTF-8 text" if isinstance(error, UnicodeDecodeError) else "cannot be read"
        raise SettingsError(f"Targets file {path} {reason}; fix it.") from None
    return parse(text, path)


def parse(text: str, path: Path) -> TargetsFile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{path}: not valid TOML: {error}.") from None
    lines = Lines(text)
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise SettingsError(
                f"{path}, line {lines.top_level(key)}: unknown key {key!r}; a targets file holds "
                "[defaults] and [[targets]] tables only."
            )
    defaults = data.get("defaults", {})
    if not isinstance(defaults, dict):
        raise SettingsError(f"{path}, line {lines.top_level('defaults')}: [defaults] is a table.")
    check_keys(defaults, DEFAULT_KEYS, path, lambda key: lines.in_table("defaults", 0, key))
    entries = data.get("targets", [])
    if not isinstance(entries, list) or not all(isinstance(item, dict) for item in entries):
        raise SettingsError(
            f"{path}, line {lines.top_level('targets')}: each target is a [[targets]] table."
        )
    if not entries:
        raise SettingsError(f"{path} lists no [[targets]]; add one table per database.")
    targets: list[Target] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        line = lines.target(index)
        check_keys(entry, TARGET_KEYS, path, lambda key, i=index: lines.in_table("targets", i, key))

        def line_of(key: str, i: int = index) -> int:
            if key in entries[i] or key not in defaults:
                return lines.in_table("targets", i, key)
            return lines.in_table("defaults", 0, key)

        target = build_target(entry, defaults, path, line, line_of)
        if target.name in seen:
            raise SettingsError(
                f"{path}, line {line}: target name {target.name!r} is already used on line "
                f"{seen[target.name]}; names must be unique."
            )
        seen[target.name] = line
        targets.append(target)
    return TargetsFile(path, tuple(targets))


def check_keys(table: dict[str, Any], allowed: frozenset[str], path: Path, line_of: Any) -> None:
    for key in table:
        if key == "password":
            raise SettingsError(
                f"{path}, line {line_of(key)}: a password never goes in the targets file; put it "
                "in an environment variable and name that with password_env (or use a passfile)."
            )
        if key not in allowed:
            raise SettingsError(
                f"{path}, line {line_of(key)}: unknown key {key!r}; known: "
                f"{', '.join(sorted(allowed))}."
            )


def build_target(
    entry: dict[str, Any],
    defaults: dict[str, Any],
    path: Path,
    line: int,
    line_of: Callable[[str], int],
) -> Target:
    """One target from its table and [defaults]; a mistake names the line of the key at fault
    (the table's own line when a key is missing)."""
    where = f"{path}, line {line}"
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise SettingsError(
            f"{where}: every target needs a name of letters, digits, '.', '_' or '-' "
            f"(up to 63, starting with a letter or digit); got {name!r}."
        )
    merged = {**defaults, **entry}
    for key, value in merged.items():
        wanted: type = int if key == "port" else str
        if not isinstance(value, wanted) or isinstance(value, bool):
            raise SettingsError(
                f"{path}, line {line_of(key)}: target {name!r} has {key} = {value!r}; it must be "
                f"{'a whole number' if wanted is int else 'a string'}."
            )
    fields: dict[str, Any] = {key: merged[key] for key in CONNECTION_FIELDS if key in merged}
    options: dict[str, str] = {}
    service = merged.get("service")
    if service is not None:
        service_file = Path(merged.get("service_file", str(DEFAULT_SERVICE_FILE))).expanduser()
        if not service_file.is_absolute():
            service_file = path.parent / service_file
        for key, value in read_service(service_file, service, where).items():
            if key in CONNECTION_FIELDS and key not in fields:
                fields[key] = int(value) if key == "port" and value.isdigit() else value
            elif key not in CONNECTION_FIELDS and key in URL_OPTIONS:
                options.setdefault(key, value)
    for required in ("host", "user", "dbname"):
        if not fields.get(required):
            source = f" (nor service {service!r})" if service else ""
            raise SettingsError(
                f"{where}: target {name!r} has no {required}; set it in the target or in "
                f"[defaults]{source}."
            )
    port = fields.get("port", DEFAULT_PORT)
    if not isinstance(port, int) or not 1 <= port <= 65535:
        raise SettingsError(
            f"{path}, line {line_of('port')}: target {name!r} has port {port!r}; use 1 to 65535."
        )
    sslmode = fields.get("sslmode")
    if sslmode is not None:
        if sslmode not in SSL_MODES:
            raise SettingsError(
                f"{path}, line {line_of('sslmode')}: target {name!r} has sslmode "
                f"{sslmode!r}; use one of {', '.join(SSL_MODES)}."
            )
        options["sslmode"] = sslmode
    password_env = merged.get("password_env")
    if password_env is not None and not VARIABLE_PATTERN.fullmatch(password_env):
        raise SettingsError(
            f"{path}, line {line_of('password_env')}: password_env {password_env!r} is not "
            "an environment variable name."
        )
    return Target(
        name=name,
        line=line,
        host=fields["host"],
        port=port,
        user=fields["user"],
        dbname=fields["dbname"],
        password_env=password_env,
        options=tuple(sorted(options.items())),
        service=service,
    )


def read_service(service_file: Path, service: str, where: str) -> dict[str, str]:
    """The entry `service` of a pg_service.conf, read here (never through PGSERVICE): host,
    port, user, dbname and the libpq options that do not change where a connection goes."""
    parser = configparser.ConfigParser(interpolation=None, strict=True, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(read_settings_file(service_file).decode("utf-8"), str(service_file))
    except FileRefused as error:
        raise SettingsError(
            f"{where}: service_file {service_file} {error.reason}; name a pg_service.conf of "
            "at most 1 MiB."
        ) from None
    except FileNotFoundError:
        raise SettingsError(
            f"{where}: service {service!r} needs {service_file}, which does not exist; "
            "set service_file or write the fields into the target."
        ) from None
    except (OSError, UnicodeDecodeError, configparser.Error) as error:
        raise SettingsError(
            f"{where}: {service_file} cannot be read as a service file: "
            f"{str(error).splitlines()[0]}."
        ) from None
    if not parser.has_section(service):
        raise SettingsError(f"{where}: {service_file} has no [{service}] entry.")
    entry = dict(parser.items(service))
    for key in entry:
        if key == "password":
            raise SettingsError(
                f"{where}: service {service!r} in {service_file} holds a password; move it to "
                "an environment variable named by password_env, or to a passfile."
            )
        if key not in SERVICE_KEYS:
            raise SettingsError(
                f"{where}: service {service!r} in {service_file} sets {key!r}, which could "
                "connect somewhere other than the file says; remove it."
            )
    return entry


# --- shards ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def holds(self, name: str) -> bool:
        """A stable split by a hash of the name: the same name is always in the same shard."""
        digest = hashlib.sha256(name.encode("utf-8")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index


def parse_shard(text: str) -> Shard:
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 0 <= int(match[1]) < int(match[2]):
        raise UsageError(f"--shard {text!r} is not I/N with I from 0 to N-1 (e.g. --shard 0/4).")
    return Shard(int(match[1]), int(match[2]))


def select(targets: Sequence[Target], shard: Shard | None) -> list[Target]:
    """The targets of `shard` (all without one), in file order."""
    return [target for target in targets if shard is None or shard.holds(target.name)]


# --- where each table and key is, for messages ------------------------------------------------


class Lines:
    """Line numbers of tables and keys in the raw text (tomllib gives values, not positions)."""

    HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"' -]+?)\s*(\]\]?)\s*(#.*)?$")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        # (line number, table name, is an array element) of each table header.
        self.headers: list[tuple[int, str, bool]] = []
        for number, line in enumerate(self.lines, start=1):
            found = self.HEADER.match(line)
            if found:
                self.headers.append((number, found[2].strip(), found[1] == "[["))

    def top_level(self, key: str) -> int:
        for number, name, _array in self.headers:
            if name == key or name.startswith(f"{key}."):
                return number
        return self._key_line(key, 1, self._first_header_line()) or 1

    def target(self, index: int) -> int:
        elements = [number for number, name, array in self.headers if array and name == "targets"]
        if index < len(elements):
            return elements[index]
        return self.top_level("targets")

    def in_table(self, table: str, index: int, key: str) -> int:
        start = self.target(index) if table == "targets" else self.top_level(table)
        following = [number for number, _name, _array in self.headers if number > start]
        end = following[0] if following else len(self.lines) + 1
        return self._key_line(key, start, end) or start

    def _first_header_line(self) -> int:
        return self.headers[0][0] if self.headers else len(self.lines) + 1

    def _key_line(self, key: str, start: int, end: int) -> int | None:
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for number in range(start, min(end, len(self.lines) + 1)):
            if pattern.match(self.lines[number - 1]):
                return number
        return None


def environment_name(environ: Mapping[str, str] | None = None) -> str:
    """DB_ENV (development, ci or production), read and checked as the single-database tasks do."""
    return DatabaseConfig.from_env(environ).env
