"""Throwaway clusters copied from one cached initdb folder: their own password, their own data."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from uaip_db import process
from uaip_db.errors import PasswordRefused, ServerError
from uaip_db.files import write_private
from uaip_db.pg import connection
from uaip_db.servers.binaries import find_binaries
from uaip_db.servers.local import Cluster
from uaip_db.servers.pristine import (
    BUILDING,
    CACHE_PREFIX,
    PristineData,
    cache_key,
    crc32c,
    crc_offset,
    give_new_identity,
    load,
    pristine_data,
    read_private,
    sweep_abandoned_builds,
)
from uaip_db.servers.scratch import SCRATCH_USER, ScratchCluster, scratch_parent


def test_each_copy_answers_to_its_own_password_and_keeps_its_own_data() -> None:
    first, second = ScratchCluster.start(), ScratchCluster.start()
    try:
        cached = pristine_data(first.binaries.bindir, SCRATCH_USER, first.cluster.root.parent)
        assert cached is not None
        assert first.admin.password != second.admin.password
        for scratch in (first, second):
            assert cached.password not in (first.admin.password, second.admin.password)
            with (
                pytest.raises(PasswordRefused),
                connection(replace(scratch.admin, password=cached.password)),
            ):
                pass
        # Backups tell servers apart by the system identifier: copies must not share it.
        identifiers = set()
        for scratch in (first, second):
            with connection(scratch.admin) as conn:
                row = conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()
                identifiers.add(row[0] if row else None)
        assert len(identifiers) == 2
        with connection(first.admin) as conn:
            conn.execute("CREATE TABLE only_in_the_first (id int)")
        with connection(second.admin) as conn:
            assert conn.execute("SELECT to_regclass('only_in_the_first')").fetchone() == (None,)
    finally:
        first.stop()
        second.stop()
    # The cached folder itself was never started or written.
    assert not (cached.data / "postmaster.pid").exists()
    assert "uaip-db settings" not in (cached.data / "postgresql.conf").read_text()


def test_runs_building_the_cache_at_once_agree_on_one_folder(shared_folder: Path) -> None:
    bindir = find_binaries().bindir
    with ThreadPoolExecutor(3) as pool:
        built = list(
            pool.map(lambda _: pristine_data(bindir, SCRATCH_USER, shared_folder), range(3))
        )
    assert all(item is not None and load(item.root) == item for item in built)
    assert len({item.root for item in built if item is not None}) == 1
    assert [p.name for p in shared_folder.iterdir()] == [
        f"{CACHE_PREFIX}{cache_key(bindir, SCRATCH_USER)}"
    ]


def test_other_binaries_or_another_time_zone_get_their_own_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "postgres").write_text("one build")
    first = cache_key(bindir, SCRATCH_USER)
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    assert cache_key(bindir, SCRATCH_USER) != first
    monkeypatch.delenv("TZ")
    assert cache_key(bindir, SCRATCH_USER) == first
    (bindir / "postgres").write_text("another build")
    assert cache_key(bindir, SCRATCH_USER) != first
    assert cache_key(bindir, "someone_else") != cache_key(bindir, SCRATCH_USER)


def test_half_built_folders_of_runs_that_are_gone_are_swept(tmp_path: Path) -> None:
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    abandoned = tmp_path / f"{CACHE_PREFIX}{BUILDING}{gone.stdout.strip()}-0a0a"
    ours = tmp_path / f"{CACHE_PREFIX}{BUILDING}{os.getpid()}-0b0b"
    for folder in (abandoned, ours):
        folder.mkdir()
    sweep_abandoned_builds(tmp_path)
    assert not abandoned.exists() and ours.exists()


def test_an_incomplete_cache_of_ours_is_made_again(shared_folder: Path) -> None:
    bindir = find_binaries().bindir
    damaged = shared_folder / f"{CACHE_PREFIX}{cache_key(bindir, SCRATCH_USER)}"
    (damaged / "cluster" / "data").mkdir(parents=True)  # no PG_VERSION, no password
    made = pristine_data(bindir, SCRATCH_USER, shared_folder)
    assert made is not None and made.root == damaged and (made.data / "PG_VERSION").is_file()
    assert not any(p.name.startswith(CACHE_PREFIX + BUILDING) for p in shared_folder.iterdir())


def test_without_a_cache_a_cluster_is_made_by_initdb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("uaip_db.servers.scratch.pristine_data", lambda *args: None)
    assert answers(ScratchCluster.start())


def test_the_control_files_checksum_is_found_and_recomputed() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    fields = bytes(range(40))
    control = fields + crc32c(fields).to_bytes(4, sys.byteorder) + bytes(100)
    assert crc_offset(control) == 40
    with pytest.raises(ValueError):
        crc_offset(bytes(200))


def plant(shared_folder: Path, bindir: Path) -> Path:
    """A complete-looking cache folder at the name the cache would use."""
    planted = shared_folder / f"{CACHE_PREFIX}{cache_key(bindir, SCRATCH_USER)}"
    data = planted / "cluster" / "data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("16\n")
    (data / "postgresql.conf").write_text("shared_preload_libraries = 'evil'\n")
    (planted / "password").write_text("known to whoever planted it")
    for path in (planted, planted / "cluster", data):
        path.chmod(0o700)
    (planted / "password").chmod(0o600)
    return planted


@pytest.mark.root  # planting a folder as another account takes root
def test_a_cache_folder_planted_by_another_account_is_never_used(shared_folder: Path) -> None:
    bindir = find_binaries().bindir
    planted = plant(shared_folder, bindir)
    for path in [planted, *planted.rglob("*")]:
        os.chown(path, 65534, 65534)  # nobody
    assert pristine_data(bindir, SCRATCH_USER, shared_folder) is None
    assert (planted / "password").read_text() == "known to whoever planted it"


def test_a_cache_folder_of_ours_others_may_write_is_made_again(shared_folder: Path) -> None:
    bindir = find_binaries().bindir
    planted = plant(shared_folder, bindir)
    process.give_to_server_account(planted / "cluster")
    planted.chmod(0o777)
    made = pristine_data(bindir, SCRATCH_USER, shared_folder)
    # Ours, but anyone could have changed it: never used, made again in its place.
    assert made is not None and made.password != "known to whoever planted it"
    assert "evil" not in (made.data / "postgresql.conf").read_text()
    assert not made.root.stat().st_mode & 0o022


def test_without_pg_resetwal_a_cluster_is_made_by_initdb(
    monkeypatch: pytest.MonkeyPatch, shared_folder: Path
) -> None:
    """Binaries packaged without pg_resetwal (or a machine without cp): the copy is given up."""
    real = find_binaries()
    bindir = shared_folder / "bin"
    bindir.mkdir()
    for program in real.bindir.iterdir():
        if program.name != "pg_resetwal":
            (bindir / program.name).symlink_to(program)
    (shared_folder / "lib").symlink_to(real.bindir.parent / "lib")
    (shared_folder / "share").symlink_to(real.bindir.parent / "share")
    monkeypatch.setattr(
        "uaip_db.servers.scratch.find_binaries", lambda major=None: replace(real, bindir=bindir)
    )
    cached = scratch_parent() / f"{CACHE_PREFIX}{cache_key(bindir, SCRATCH_USER)}"
    try:
        assert answers(ScratchCluster.start())
    finally:
        shutil.rmtree(cached, ignore_errors=True)  # the cache of these borrowed binaries


@pytest.fixture
def own_cache(shared_folder: Path) -> PristineData:
    """A private copy of the real cache, which a test may damage without touching the shared one."""
    real = find_binaries()
    shared = pristine_data(real.bindir, SCRATCH_USER, scratch_parent())
    assert shared is not None
    copy = shared_folder / shared.root.name
    subprocess.run(["cp", "-a", str(shared.root), str(copy)], check=True)
    found = load(copy)
    assert found is not None
    return found


def start_from(monkeypatch: pytest.MonkeyPatch, cache: PristineData) -> ScratchCluster:
    monkeypatch.setattr("uaip_db.servers.scratch.pristine_data", lambda *args: cache)
    return ScratchCluster.start()


def answers(scratch: ScratchCluster) -> bool:
    """Whether `scratch` lets its superuser in; it is stopped after."""
    try:
        with connection(scratch.admin) as conn:
            return conn.execute("SELECT current_user").fetchone() == (SCRATCH_USER,)
    finally:
        scratch.stop()


def test_a_cache_deleted_while_a_server_starts_from_it_breaks_nothing(
    monkeypatch: pytest.MonkeyPatch, own_cache: PristineData
) -> None:
    (own_cache.root / "password").unlink()  # after it was found, before the server is up
    assert answers(start_from(monkeypatch, own_cache))
    shutil.rmtree(own_cache.root)  # before the copy
    assert answers(start_from(monkeypatch, own_cache))


@pytest.mark.parametrize("lost", ["global/pg_control", "global/pg_filenode.map"])
def test_a_damaged_cache_is_forgotten_and_the_server_made_by_initdb(
    monkeypatch: pytest.MonkeyPatch, own_cache: PristineData, lost: str
) -> None:
    (own_cache.data / lost).unlink()
    assert answers(start_from(monkeypatch, own_cache))
    assert not own_cache.root.exists()  # the next start makes it again


def test_each_account_has_its_own_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "postgres").write_text("one build")
    mine = cache_key(tmp_path, SCRATCH_USER)
    monkeypatch.setattr("uaip_db.servers.pristine.os.geteuid", lambda: 4321)
    assert cache_key(tmp_path, SCRATCH_USER) != mine


def test_links_in_a_copy_are_never_followed(shared_folder: Path) -> None:
    """As root, the copied data folder belongs to the server account: a link it planted there
    must not make root write elsewhere."""
    victim = shared_folder / "victim"
    victim.write_bytes(b"root's own file\n" * 64)
    data = shared_folder / "cluster" / "data"
    (data / "global").mkdir(parents=True)
    (data / "global" / "pg_control").symlink_to(victim)
    (data / "postgresql.conf").symlink_to(victim)
    cluster = Cluster(shared_folder / "cluster", find_binaries().bindir)
    with pytest.raises(ServerError):
        give_new_identity(cluster)
    with pytest.raises(ServerError):
        cluster.configure({"fsync": "off"})
    assert victim.read_bytes() == b"root's own file\n" * 64


def test_a_cache_whose_binaries_are_gone_is_swept(shared_folder: Path) -> None:
    real = find_binaries().bindir
    borrowed = shared_folder / "bin"
    borrowed.mkdir()
    for program in real.iterdir():
        (borrowed / program.name).symlink_to(program)
    made = pristine_data(borrowed, SCRATCH_USER, shared_folder)
    kept = pristine_data(real, SCRATCH_USER, shared_folder)
    assert made is not None and kept is not None
    sweep_abandoned_builds(shared_folder)
    assert made.root.exists()  # its binaries are still there
    shutil.rmtree(borrowed)
    sweep_abandoned_builds(shared_folder)
    assert not made.root.exists() and kept.root.exists()


def test_the_server_account_cannot_write_where_root_reads_and_writes(shared_folder: Path) -> None:
    """The password and the binaries' path sit in a folder of ours that only we may write: the
    server account (which owns the cached cluster) cannot swap them for links or pipes."""
    made = pristine_data(find_binaries().bindir, SCRATCH_USER, shared_folder)
    assert made is not None
    found = made.root.stat()
    assert found.st_uid == os.geteuid() and not found.st_mode & 0o022
    if process.server_account() is not None:  # as root: try it as the server account
        planted = process.execute(["ln", "-s", "/etc/shadow", str(made.root / "x")], as_server=True)
        assert planted.returncode != 0 and not (made.root / "x").exists()


def test_private_files_are_never_read_through_a_link_or_from_a_pipe(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    write_private(secret, "ours")
    assert read_private(secret) == "ours"
    (tmp_path / "link").symlink_to(secret)
    os.mkfifo(tmp_path / "pipe", 0o600)
    (tmp_path / "shared").write_text("anyone may read it")
    (tmp_path / "shared").chmod(0o644)
    for path in ("link", "pipe", "shared", "missing"):
        assert read_private(tmp_path / path) is None  # and the pipe did not block
    write_private(tmp_path / "link", "never through the link")
    assert secret.read_text() == "ours"
    assert not (tmp_path / "link").is_symlink()
    assert read_private(tmp_path / "link") == "never through the link"


def test_a_pipe_in_the_cache_makes_no_start_hang(
    monkeypatch: pytest.MonkeyPatch, own_cache: PristineData
) -> None:
    conf = own_cache.data / "postgresql.conf"
    conf.unlink()
    os.mkfifo(conf, 0o600)
    process.give_to_server_account(conf)

    def too_long(*_: object) -> None:
        raise TimeoutError("the start hung on the pipe")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(60)
    try:
        assert answers(start_from(monkeypatch, own_cache))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert not own_cache.root.exists()  # forgotten
