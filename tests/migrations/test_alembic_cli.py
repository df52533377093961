"""Plain Alembic keeps working, from any directory, with settings from the environment."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

from tests.conftest import CHAIN, HEAD, ROOT, run_cli, sql
from uaip_db.settings import DatabaseConfig

INI = str(ROOT / "alembic.ini")


def test_upgrade_downgrade_current_history_from_another_directory(
    empty_db: DatabaseConfig, tmp_path: Path
) -> None:
    up = run_cli("alembic", "-c", INI, "upgrade", "head", database=empty_db, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    assert f"Running upgrade {CHAIN[-2]} -> {HEAD}" in up.stderr
    assert sql(empty_db, "SELECT version_num FROM alembic_version") == [(HEAD,)]

    down = run_cli(
        "alembic", "downgrade", "-1", database=empty_db, cwd=tmp_path, env={"ALEMBIC_CONFIG": INI}
    )
    assert down.returncode == 0, down.stderr
    current = run_cli("alembic", "-c", INI, "current", database=empty_db, cwd=tmp_path)
    assert current.stdout.strip() == CHAIN[-2]

    history = run_cli("alembic", "-c", INI, "history", cwd=tmp_path)
    assert history.returncode == 0
    assert "<base> -> 03033cebb647, Initial schema from init.sql" in history.stdout
    assert empty_db.password not in up.stdout + up.stderr + down.stdout + down.stderr


def test_plain_alembic_reports_a_wrong_password_without_a_traceback(
    empty_db: DatabaseConfig, tmp_path: Path
) -> None:
    from dataclasses import replace

    wrong = replace(empty_db, password="definitely-wrong")
    result = run_cli("alembic", "-c", INI, "upgrade", "head", database=wrong, cwd=tmp_path)
    assert result.returncode == 2, "a connection problem, as `inv` says it"
    assert "Cannot connect" in result.stderr and "password was refused" in result.stderr
    said = result.stdout + result.stderr
    assert said.count("password was refused") == 1, "said once, not logged and printed again"
    assert "Traceback" not in result.stderr
    assert "definitely-wrong" not in result.stderr


def test_revision_writes_a_script_from_the_template(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    shutil.copytree(
        ROOT / "migrations", checkout / "migrations", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "alembic.ini", checkout / "alembic.ini")
    result = run_cli(
        "alembic",
        "-c",
        str(checkout / "alembic.ini"),
        "revision",
        "-m",
        "add charter tags",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    written = list((checkout / "migrations" / "versions").glob("*_add_charter_tags.py"))
    assert len(written) == 1
    text = written[0].read_text()
    assert f'down_revision: str | Sequence[str] | None = "{HEAD}"' in text
    assert "def downgrade() -> None:" in text


@pytest.mark.parametrize("command", [["downgrade", "base"], ["stamp", "base"]])
def test_plain_alembic_in_production_needs_the_name(
    head_db: DatabaseConfig, tmp_path: Path, command: list[str]
) -> None:
    production = {"DB_ENV": "production"}
    refused = run_cli(
        "alembic", "-c", INI, *command, database=head_db, cwd=tmp_path, env=production
    )
    assert refused.returncode != 0
    assert f"-x confirm-db={head_db.name}" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert sql(head_db, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    wrong = run_cli(
        "alembic",
        "-c",
        INI,
        "-x",
        "confirm-db=other",
        *command,
        database=head_db,
        cwd=tmp_path,
        env=production,
    )
    assert wrong.returncode != 0
    assert sql(head_db, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    confirmed = run_cli(
        "alembic",
        "-c",
        INI,
        "-x",
        f"confirm-db={head_db.name}",
        *command,
        database=head_db,
        cwd=tmp_path,
        env=production,
    )
    assert confirmed.returncode == 0, confirmed.stderr
    assert sql(head_db, "SELECT count(*) FROM alembic_version") == [(0,)]


def test_plain_alembic_upgrade_in_production_needs_no_name(
    empty_db: DatabaseConfig, tmp_path: Path
) -> None:
    result = run_cli(
        "alembic",
        "-c",
        INI,
        "upgrade",
        "head",
        database=empty_db,
        cwd=tmp_path,
        env={"DB_ENV": "production"},
    )
    assert result.returncode == 0, result.stderr


def alembic_api_config() -> Config:
    """Alembic's own Config, as an application or a pytest plugin builds it."""
    return Config(INI)


def test_an_engine_handed_to_alembic_is_left_as_the_caller_gave_it(
    empty_db: DatabaseConfig,
) -> None:
    # Alembic's cookbook: share an Engine through config.attributes["connection"]. A small pool
    # makes the engine hand its pooled connection back on every checkout.
    engine = create_engine(empty_db.sqlalchemy_url(), pool_size=1, max_overflow=0)
    try:
        config = alembic_api_config()
        config.attributes["connection"] = engine
        command.upgrade(config, CHAIN[0])
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM sessions")).scalar() == 0
        command.upgrade(config, "head")
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [(HEAD,)]
    finally:
        engine.dispose()


def test_a_connection_handed_to_alembic_stays_open_and_usable(empty_db: DatabaseConfig) -> None:
    engine = create_engine(empty_db.sqlalchemy_url(), pool_size=1, max_overflow=1)
    try:
        with engine.connect() as conn:
            config = alembic_api_config()
            config.attributes["connection"] = conn
            command.upgrade(config, CHAIN[0])
            command.upgrade(config, "head")
            conn.commit()
            assert not conn.closed
            assert conn.execute(text("SELECT version_num FROM alembic_version")).all() == [(HEAD,)]
        assert sql(empty_db, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    finally:
        engine.dispose()
