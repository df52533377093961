from __future__ import annotations

import ast
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from sqlalchemy.engine import make_url

import uaip_db
from tests.conftest import ROOT
from uaip_db import paths
from uaip_db.errors import SettingsError, UsageError
from uaip_db.parsers import PATH, SECONDS, TEXT, whole_number
from uaip_db.servers.binaries import RELEASES
from uaip_db.servers.local import find_bindir
from uaip_db.servers.scratch import (
    ScratchPlace,
    ScratchServer,
    scratch_place,
    wants_existing_server,
)
from uaip_db.settings import (
    POSTGRES_MAJORS,
    SETTINGS,
    DatabaseConfig,
    Setting,
    parse_database_url,
)

TRICKY = "p@ss:w/rd%#' x"


def write_env(tmp_path: Path, text: str) -> Path:
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def test_defaults_are_the_guides(tmp_path: Path) -> None:
    config = DatabaseConfig.from_env({}, tmp_path / "missing.env")
    assert (config.host, config.port, config.name, config.user, config.password, config.env) == (
        "localhost",
        15432,
        "uaip_scoping",
        "uaip_user",
        "changeme",
        "development",
    )


def test_environment_wins_over_dotenv_which_wins_over_defaults(tmp_path: Path) -> None:
    dotenv = write_env(tmp_path, "DB_HOST=from-dotenv\nDB_NAME=dotenv_db\nDB_PORT=5433\n")
    config = DatabaseConfig.from_env({"DB_HOST": "from-env"}, dotenv)
    assert config.host == "from-env"
    assert config.name == "dotenv_db"
    assert config.port == 5433
    assert config.user == "uaip_user"


def test_empty_values_count_as_unset(tmp_path: Path) -> None:
    dotenv = write_env(tmp_path, "DB_PORT=\nDB_PASSWORD\n")
    config = DatabaseConfig.from_env({"DB_NAME": ""}, dotenv)
    assert (config.port, config.password, config.name) == (15432, "changeme", "uaip_scoping")


def test_database_url_overrides_the_five(tmp_path: Path) -> None:
    config = DatabaseConfig.from_env(
        {"DATABASE_URL": "postgresql://alice:s3cret@db.example:6543/scoping", "DB_HOST": "ignored"},
        tmp_path / "missing.env",
    )
    assert (config.host, config.port, config.name, config.user, config.password) == (
        "db.example",
        6543,
        "scoping",
        "alice",
        "s3cret",
    )


def test_percent_encoded_url_parts_are_decoded() -> None:
    config = parse_database_url(
        "postgresql+psycopg://al%40ice:p%40ss%3Aw%2Frd%25%23%27%20x@h:1/d%20b"
    )
    assert config.user == "al@ice"
    assert config.password == TRICKY
    assert config.name == "d b"


def test_sqlalchemy_url_keeps_a_tricky_password_intact() -> None:
    config = DatabaseConfig(password=TRICKY)
    url = config.sqlalchemy_url()
    assert url.password == TRICKY
    rendered = url.render_as_string(hide_password=False)
    assert make_url(rendered).password == TRICKY
    assert TRICKY not in str(url)


def test_display_and_repr_never_show_the_password() -> None:
    config = DatabaseConfig(password=TRICKY)
    assert TRICKY not in config.display_url()
    assert TRICKY not in repr(config)
    assert "***" in config.display_url()


def test_libpq_env_carries_the_password() -> None:
    env = DatabaseConfig(password=TRICKY, port=6000).libpq_env()
    assert env["PGPASSWORD"] == TRICKY
    assert env["PGPORT"] == "6000"


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"DB_PORT": "abc"}, "DB_PORT='abc' is not a port number"),
        ({"DB_PORT": "70000"}, "DB_PORT='70000' is not a port number"),
        ({"DB_ENV": "staging"}, "DB_ENV='staging' is not one of"),
        ({"DATABASE_URL": "mysql://u:p@h/db"}, "DATABASE_URL is not a PostgreSQL URL"),
        ({"DATABASE_URL": "postgresql://u:p@h:port/db"}, "its port is not a number"),
        ({"DATABASE_URL": "postgresql://u:p@h:5432"}, "it names no database"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL is not a PostgreSQL URL"),
    ],
)
def test_bad_settings_say_what_to_fix(
    tmp_path: Path, environ: dict[str, str], fragment: str
) -> None:
    with pytest.raises(SettingsError) as raised:
        DatabaseConfig.from_env({**environ, "DB_PASSWORD": "hunter2"}, tmp_path / "missing.env")
    assert fragment in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_bad_port_in_dotenv_is_reported(tmp_path: Path) -> None:
    dotenv = write_env(tmp_path, "DB_PORT=fifteen\n")
    with pytest.raises(SettingsError, match="DB_PORT='fifteen'"):
        DatabaseConfig.from_env({}, dotenv)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('DB_NAME=mine\nDB_PASSWORD="hunter2-unterminated\n', 2),
        ("DB_NAME=mine\n\n# the host\n\nthis is not a line\nDB_HOST=db\n", 5),
    ],
)
def test_a_dotenv_line_that_is_not_a_setting_is_refused(
    tmp_path: Path, text: str, line: int
) -> None:
    # Passed over, DB_PASSWORD or DB_HOST would silently take its default.
    dotenv = write_env(tmp_path, text)
    with pytest.raises(SettingsError) as refused:
        DatabaseConfig.from_env({}, dotenv)
    assert str(refused.value).startswith(f"{dotenv} line {line} is not a setting")
    assert "hunter2" not in str(refused.value)


def test_production_flag(tmp_path: Path) -> None:
    assert DatabaseConfig.from_env({"DB_ENV": "Production"}, tmp_path / "x").is_production


def test_a_dotenv_url_never_beats_settings_from_the_environment(tmp_path: Path) -> None:
    dotenv = write_env(tmp_path, "DATABASE_URL=postgresql://dev:pw@127.0.0.1:25951/keep\n")
    assert DatabaseConfig.from_env({}, dotenv).name == "keep"
    named = DatabaseConfig.from_env({"DB_NAME": "scratchdb"}, dotenv)
    assert (named.name, named.port, named.host) == ("scratchdb", 15432, "localhost")
    # What nox hands its children: explicit DB_* and an empty DATABASE_URL.
    child = DatabaseConfig.from_env(
        {"DATABASE_URL": "", "DB_HOST": "127.0.0.1", "DB_PORT": "5999", "DB_NAME": "t"}, dotenv
    )
    assert (child.host, child.port, child.name) == ("127.0.0.1", 5999, "t")


def test_an_empty_password_in_the_environment_is_empty(tmp_path: Path) -> None:
    dotenv = write_env(tmp_path, "DB_PASSWORD=from-dotenv\n")
    assert DatabaseConfig.from_env({"DB_PASSWORD": ""}, dotenv).password == ""
    assert DatabaseConfig.from_env({}, dotenv).password == "from-dotenv"


@pytest.mark.parametrize(
    "query", ["dbname=victim", "host=elsewhere", "port=5999", "user=postgres", "service=prod"]
)
def test_a_url_query_that_would_redirect_the_connection_is_refused(
    query: str, tmp_path: Path
) -> None:
    url = f"postgresql://u:p@db.example:5432/decoy?{query}"
    with pytest.raises(SettingsError, match="could connect somewhere other") as raised:
        DatabaseConfig.from_env({"DATABASE_URL": url}, tmp_path / "missing.env")
    assert "p@" not in str(raised.value)


def test_a_url_query_may_set_tls_options(tmp_path: Path) -> None:
    url = "postgresql://u:p@db.example:5432/scoping?sslmode=require"
    config = DatabaseConfig.from_env({"DATABASE_URL": url}, tmp_path / "missing.env")
    assert config.name == "scoping" and dict(config.options) == {"sslmode": "require"}


def test_client_tools_get_url_options_under_the_names_libpq_reads(server: ScratchServer) -> None:
    """A read-only session asked for in the URL must stop psql on a primary, not be ignored."""
    admin = server.admin
    password = quote(admin.password, safe="")
    url = (
        f"postgresql://{admin.user}:{password}@{admin.host}:{admin.port}/postgres"
        "?target_session_attrs=read-only"
    )
    config = DatabaseConfig.from_env({"DATABASE_URL": url}, Path("/nonexistent"))
    bindir = find_bindir()
    assert bindir is not None
    result = subprocess.run(
        [str(bindir / "psql"), "-X", "-c", "SELECT 1"],
        env={"PATH": os.environ["PATH"], **config.libpq_env()},
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "read-write" in result.stderr or "read-only" in result.stderr


# --- where throwaway databases are made -----------------------------------------------------


def test_the_place_for_throwaway_databases() -> None:
    assert scratch_place({}).is_local
    assert scratch_place({"UAIP_SCRATCH": "local", "UAIP_TEST_SERVER": "env"}).is_local
    url = "postgresql://admin:p%40ss@db.example:6432/postgres?sslmode=require"
    chosen = scratch_place({"UAIP_SCRATCH_URL": url, "UAIP_TEST_SERVER": "env"})
    assert chosen.admin is not None and chosen.chosen_by == "UAIP_SCRATCH_URL"
    assert (chosen.admin.host, chosen.admin.port, chosen.admin.user, chosen.admin.password) == (
        "db.example",
        6432,
        "admin",
        "p@ss",
    )
    named = scratch_place({"UAIP_SCRATCH": "ENV", "DB_HOST": "db", "DB_PORT": "6000"})
    assert named.admin is not None and (named.admin.host, named.admin.port) == ("db", 6000)
    legacy = scratch_place({"UAIP_TEST_SERVER": "env", "DB_USER": "ci"})
    assert legacy.admin is not None and legacy.chosen_by == "UAIP_TEST_SERVER=env"
    # An empty value (what a child of the tests is given) counts as unset.
    assert scratch_place({"UAIP_SCRATCH_URL": "", "UAIP_SCRATCH": ""}).is_local


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"UAIP_SCRATCH": "yes"}, "UAIP_SCRATCH='yes' is not one of local, env"),
        ({"UAIP_SCRATCH_URL": "admin@db/postgres"}, "UAIP_SCRATCH_URL is not a PostgreSQL URL"),
        ({"UAIP_SCRATCH_URL": "postgresql://a:b@h:99999/postgres"}, "UAIP_SCRATCH_URL is not"),
        ({"UAIP_SCRATCH_URL": "postgresql://a:b@h/postgres?host=x"}, "UAIP_SCRATCH_URL's query"),
        (
            {"UAIP_SCRATCH_URL": "postgresql://a:b@h/postgres", "UAIP_SCRATCH": "local"},
            "unset one",
        ),
    ],
)
def test_a_bad_place_for_throwaway_databases_is_named(environ: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(named)):
        scratch_place(environ)


# --- the table: one reader, one parser per kind of value ----------------------------------------

# Building a child process's environment is not reading a setting: pg.py hands children this
# process's environment without the caller's libpq variables, and hides those variables from
# libpq while it connects.
ENVIRONMENT_NAMES = {"environ", "environb", "getenv", "getenvb"}
ALLOWED_READERS = {("pg.py", "child_environment"), ("pg.py", "without_libpq_environment")}


def environment_reads(package: Path) -> list[str]:
    """`module:line (function)` of every use of os.environ / os.getenv outside settings.py and
    the places that build a child's environment."""
    found = []
    for path in sorted(package.rglob("*.py")):
        module = path.relative_to(package).as_posix()
        if module == "settings.py":
            continue
        for function, node in _nodes(ast.parse(path.read_text(encoding="utf-8")), ""):
            reads = (
                isinstance(node, ast.Attribute)
                and node.attr in ENVIRONMENT_NAMES
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "os"
                and any(alias.name in ENVIRONMENT_NAMES for alias in node.names)
            )
            if reads and (module, function) not in ALLOWED_READERS:
                found.append(f"{module}:{node.lineno} ({function or 'module level'})")
    return found


def _nodes(node: ast.AST, function: str) -> Iterator[tuple[str, ast.AST]]:
    for child in ast.iter_child_nodes(node):
        inside = function
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            inside = child.name
        yield inside, child
        yield from _nodes(child, inside)


def test_settings_py_is_the_only_reader_of_the_environment() -> None:
    package = Path(uaip_db.__file__).parent
    assert environment_reads(package) == [], (
        "read settings through uaip_db.settings (add the variable to SETTINGS)"
    )


def test_the_reader_check_finds_a_planted_read(tmp_path: Path) -> None:
    (tmp_path / "settings.py").write_text("import os\nX = os.environ.get('UAIP_X')\n")
    (tmp_path / "planted.py").write_text(
        "import os\nfrom os import getenv\n\n\ndef budget():\n"
        "    return os.environ.get('UAIP_LOCK_BUDGET')\n"
    )
    assert environment_reads(tmp_path) == [
        "planted.py:2 (module level)",
        "planted.py:6 (budget)",
    ]


def test_every_variable_the_code_names_is_in_the_table() -> None:
    named = set()
    for path in [*Path(uaip_db.__file__).parent.rglob("*.py"), ROOT / "tasks.py"]:
        named |= set(re.findall(r"\bUAIP_[A-Z0-9_]+\b", path.read_text(encoding="utf-8")))
    assert named - {setting.name for setting in SETTINGS} == set()


def test_the_table_is_one_line_per_setting() -> None:
    names = [setting.name for setting in SETTINGS]
    assert len(names) == len(set(names))
    for setting in SETTINGS:
        assert setting.doc and "\n" not in setting.doc and setting.parser.accepts
        assert setting.default is None or setting.parse(str(setting.shown_default())) is not None


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.parser not in (TEXT, PATH)])
def test_each_parser_names_the_variable_and_what_to_do(setting: Setting[Any]) -> None:
    with pytest.raises(SettingsError) as refused:
        setting.parse("soon")
    said = str(refused.value)
    assert said.startswith(setting.name) and "\n" not in said
    assert "fix it" in said or "point it" in said or "percent-encode" in said
    if setting.secret:
        assert "soon" not in said  # a URL may hold a password
    else:
        assert f"{setting.name}='soon'" in said
    if not setting.dotenv:
        with pytest.raises(SettingsError, match=re.escape(setting.name)):
            setting.read({setting.name: "soon"})
        assert setting.read({setting.name: " "}) == setting.default  # empty is unset


def test_flags_share_the_parsers() -> None:
    with pytest.raises(UsageError, match=r"^--canary 'some' is not a whole number of 0 or more\.$"):
        whole_number(0).flag("some", "--canary")
    with pytest.raises(UsageError, match=r"^--jobs '0' is not a number of parallel jobs; use a "):
        whole_number(1).flag("0", "--jobs", "a number of parallel jobs")
    assert SECONDS.flag("2.5", "--lock-wait") == 2.5
    for bad in ("nan", "inf", "-0.5"):
        with pytest.raises(UsageError, match="--lock-wait"):
            SECONDS.flag(bad, "--lock-wait")


def test_the_test_server_is_checked_one_way() -> None:
    # scratch_place passed over a UAIP_TEST_SERVER it did not know; the tests refused it.
    for read in (scratch_place, wants_existing_server):
        with pytest.raises(SettingsError, match="UAIP_TEST_SERVER='yes' is not one of cluster"):
            read({"UAIP_TEST_SERVER": "yes"})
        assert read({"UAIP_TEST_SERVER": "Cluster"}) in (False, ScratchPlace(None, "the default"))


def test_majors_are_the_pinned_releases() -> None:
    assert tuple(str(major) for major in RELEASES) == POSTGRES_MAJORS


def test_project_root_and_the_backup_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UAIP_DB_ROOT", str(tmp_path))
    monkeypatch.delenv("UAIP_BACKUP_DIR", raising=False)
    assert paths.project_root() == tmp_path.resolve()
    assert paths.dotenv_file() == tmp_path.resolve() / ".env"
    assert paths.backup_dir() == tmp_path.resolve() / "backups"
    monkeypatch.setenv("UAIP_BACKUP_DIR", "~/kept")
    assert paths.backup_dir() == Path("~/kept").expanduser().resolve()
