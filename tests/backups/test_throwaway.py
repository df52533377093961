"""Throwaway databases: held while their run lives, swept once it is gone, never otherwise."""

from __future__ import annotations

import os
import time

from uaip_db import pg
from uaip_db.backups import throwaway
from uaip_db.servers.scratch import ScratchServer


def names(server: ScratchServer) -> set[str]:
    rows = server.connection().execute("SELECT datname FROM pg_database").fetchall()
    return {str(row[0]) for row in rows}


def test_only_the_throwaway_databases_of_stopped_runs_are_swept(server: ScratchServer) -> None:
    admin = server.connection()
    dead = ["uaip_verify_999999_dead01", "uaip_rehearsal_999999_dead02", "uaip_verify_1a2b3c4d"]
    for name in [*dead, "uaip_verify_999999_live", "uaip_verify_999999_busy", "uaip_verifyx"]:
        pg.create_database(admin, name)
    holder = pg.connect(server.admin.with_database(pg.MAINTENANCE_DATABASE))
    visitor = pg.connect(server.config_for("uaip_verify_999999_busy"))
    try:
        holder.execute(
            "SELECT pg_advisory_lock(%s::int, hashtext(%s))",
            (throwaway.LOCK_CLASS, "uaip_verify_999999_live"),
        )
        swept = throwaway.sweep(server)
        assert set(dead) <= set(swept) and swept == sorted(swept)
        assert not {"uaip_verify_999999_live", "uaip_verify_999999_busy"} & set(swept)
        left = names(server)
        assert not set(dead) & left
        assert {"uaip_verify_999999_live", "uaip_verify_999999_busy", "uaip_verifyx"} <= left
    finally:
        holder.close()
        visitor.close()
    deadline = time.monotonic() + 30
    while admin.execute(throwaway.SESSIONS_QUERY, ("uaip_verify_999999_busy",)).fetchone() != (0,):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert {"uaip_verify_999999_live", "uaip_verify_999999_busy"} <= set(throwaway.sweep(server))
    server.drop_database("uaip_verifyx")


def test_a_throwaway_database_is_held_while_it_lives_and_dropped_after(
    server: ScratchServer,
) -> None:
    with throwaway.throwaway_database(server, throwaway.VERIFY_PREFIX) as target:
        assert target.name.startswith(f"uaip_verify_{os.getpid()}_")
        pg.create_database(server.connection(), target.name)
        assert throwaway.sweep(server) == []  # another run sweeping now leaves it alone
        assert target.name in names(server)
    assert target.name not in names(server)
