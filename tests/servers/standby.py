"""A hot standby of the test server: pg_basebackup -R from the scratch server's own binaries,
started on a free port as the account the scratch servers run as."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from uaip_db import process
from uaip_db.servers.local import Cluster, PidFile, conf_value
from uaip_db.servers.scratch import (
    OWNER_FILE,
    SCRATCH_PREFIX,
    ScratchServer,
    free_port,
    launch_postgres,
    scratch_parent,
    stop_process,
)
from uaip_db.settings import DatabaseConfig


def libpq_value(value: str) -> str:
    """A conninfo value: single-quoted, with quotes and backslashes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@contextmanager
def hot_standby(server: ScratchServer) -> Iterator[DatabaseConfig]:
    """The maintenance database of a running hot standby of `server`, as its admin."""
    if server.cluster is None:
        pytest.skip("a standby is made from the private test server (UAIP_TEST_SERVER=env)")
    primary = server.cluster
    root = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=scratch_parent()))
    (root / OWNER_FILE).write_text(str(os.getpid()))  # a sweep leaves it while we live
    standby = Cluster(root, primary.binaries.bindir)
    standby.socket_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    process.give_to_server_account(root)
    admin = primary.admin
    try:
        process.run(
            [
                standby.tool("pg_basebackup"),
                "-D",
                str(standby.data),
                "-R",
                "-X",
                "stream",
                "--checkpoint=fast",
            ],
            env={
                "PGHOST": admin.host,
                "PGPORT": str(admin.port),
                "PGUSER": admin.user,
                "PGPASSWORD": admin.password,
            },
            as_server=True,
            what="copy the test server (pg_basebackup)",
        )
        # -R wrote standby.signal and a primary_conninfo naming every option the client knows;
        # the server's walreceiver may load an older libpq (sslcertmode is 16's), so a plain one
        # written after it wins.
        conninfo = " ".join(
            f"{key}={libpq_value(value)}"
            for key, value in (
                ("host", admin.host),
                ("port", str(admin.port)),
                ("user", admin.user),
                ("password", admin.password),
            )
        )
        with (standby.data / "postgresql.auto.conf").open("a") as conf:
            conf.write(f"primary_conninfo = {conf_value(conninfo)}\n")
        with (standby.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"unix_socket_directories = {conf_value(str(standby.socket_dir))}\n"
                "hot_standby = on\n"
            )
        port = free_port()
        child = launch_postgres(standby, port)
        try:
            deadline = time.monotonic() + 60
            while True:
                pid_file = PidFile.read(standby.data)
                if (
                    pid_file
                    and pid_file.pid == child.pid
                    and pid_file.status in ("ready", "standby")
                ):
                    break
                assert child.poll() is None and time.monotonic() < deadline, (
                    pid_file,
                    standby.log_tail(),
                )
                time.sleep(0.02)
            yield replace(admin, port=port)
        finally:
            stop_process(child)
    finally:
        shutil.rmtree(root, ignore_errors=True)
