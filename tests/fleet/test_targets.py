"""The targets file: what it may say, what it is refused for (naming the line), shards."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, ROOT, cli_env, run_inv
from uaip_db.errors import SettingsError, UsageError
from uaip_db.fleet import run
from uaip_db.fleet.targets import Shard, load, parse_shard, select

GOOD = """\
[defaults]
host = "db.internal"
user = "migrator"
password_env = "FLEET_PW"

[[targets]]
name = "tenant-a"
dbname = "uaip_a"

[[targets]]
name = "tenant-b"
dbname = "uaip_b"
port = 6432
sslmode = "require"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "targets.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_fill_in_and_targets_win(tmp_path: Path) -> None:
    loaded = load(write(tmp_path, GOOD))
    first, second = loaded.targets
    assert (first.name, first.host, first.port, first.user, first.dbname) == (
        "tenant-a",
        "db.internal",
        5432,
        "migrator",
        "uaip_a",
    )
    assert (second.port, dict(second.options)) == (6432, {"sslmode": "require"})
    config = second.config({"FLEET_PW": "s3cret"}, "ci")
    assert (config.name, config.password, config.connect_kwargs()["sslmode"]) == (
        "uaip_b",
        "s3cret",
        "require",
    )


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (GOOD + 'colour = "blue"\n', 15, "unknown key 'colour'"),
        (GOOD.replace('name = "tenant-b"', 'name = "tenant-a"'), 10, "already used on line 6"),
        (GOOD.replace('dbname = "uaip_b"\n', ""), 10, "has no dbname"),
        (GOOD.replace('user = "migrator"', 'password = "hunter2"'), 3, "never goes in"),
        (GOOD.replace("port = 6432", 'port = "6432"'), 13, "must be a whole number"),
        (GOOD.replace('"require"', '"sometimes"'), 14, "sslmode 'sometimes'"),
        (GOOD.replace('"FLEET_PW"', '"NOT A NAME"'), 4, "not an environment variable"),
        ('[[targets]]\nname = "x"\n[extra]\nkey = 1\n', 3, "unknown key 'extra'"),
    ],
)
def test_bad_files_are_refused_naming_the_line(
    tmp_path: Path, text: str, line: int, words: str
) -> None:
    with pytest.raises(SettingsError) as refused:
        load(write(tmp_path, text))
    message = str(refused.value)
    assert f"line {line}:" in message and words in message
    assert "hunter2" not in message


def test_a_password_variable_that_is_not_set(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"\$FLEET_PW, which is not set"):
        run.load_fleet(write(tmp_path, GOOD), environ={})


def test_a_service_is_read_from_the_named_file_never_from_pgservice(tmp_path: Path) -> None:
    (tmp_path / "services.conf").write_text(
        "[tenant]\nhost=10.0.0.7\nport=6543\ndbname=from_service\nsslmode=verify-full\n"
    )
    (tmp_path / "evil.conf").write_text("[tenant]\nhost=evil\ndbname=evil\n")
    text = (
        '[[targets]]\nname = "t"\nuser = "u"\nservice = "tenant"\nservice_file = "services.conf"\n'
    )
    fleet = run.load_fleet(
        write(tmp_path, text),
        environ={"PGSERVICE": "tenant", "PGSERVICEFILE": str(tmp_path / "evil.conf")},
    )
    (config,) = fleet.configs
    assert (config.host, config.port, config.name, config.user) == (
        "10.0.0.7",
        6543,
        "from_service",
        "u",
    )
    assert dict(config.options) == {"sslmode": "verify-full"}


def test_a_service_may_not_redirect_or_hold_a_password(tmp_path: Path) -> None:
    text = '[[targets]]\nname = "t"\nservice = "tenant"\nservice_file = "s.conf"\n'
    for entry, words in (("hostaddr=10.9.9.9", "sets 'hostaddr'"), ("password=x", "password")):
        (tmp_path / "s.conf").write_text(f"[tenant]\nhost=h\nuser=u\ndbname=d\n{entry}\n")
        with pytest.raises(SettingsError, match=words):
            load(write(tmp_path, text))


def test_shards_cover_every_target_once_and_stay_put(tmp_path: Path) -> None:
    names = [f"tenant-{number}" for number in range(40)]
    text = "".join(
        f'[[targets]]\nname = "{n}"\nhost = "h"\nuser = "u"\ndbname = "d"\n' for n in names
    )
    targets = load(write(tmp_path, text)).targets
    for count in (1, 2, 3, 7):
        shares = [select(targets, Shard(index, count)) for index in range(count)]
        seen = [target.name for share in shares for target in share]
        assert sorted(seen) == sorted(names) and len(seen) == len(set(seen))
        if count > 1:
            assert all(share for share in shares), "a share of 40 names came out empty"
        again = [select(load(write(tmp_path, text)).targets, Shard(i, count)) for i in range(count)]
        assert again == shares
    # A target keeps its shard when others are added to the file.
    more = text + '[[targets]]\nname = "late"\nhost = "h"\nuser = "u"\ndbname = "d"\n'
    grown = select(load(write(tmp_path, more)).targets, Shard(1, 3))
    assert [t.name for t in grown if t.name != "late"] == [
        t.name for t in select(targets, Shard(1, 3))
    ]


@pytest.mark.parametrize("text", ["2/2", "1", "-1/3", "a/b", "0/0"])
def test_bad_shards(text: str) -> None:
    with pytest.raises(UsageError, match="--shard"):
        parse_shard(text)


@pytest.fixture
def listener() -> Iterator[tuple[int, list[object]]]:
    """A port where something listens and counts who connects (nothing should)."""
    accepted: list[object] = []
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.settimeout(0.2)
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, address = sock.accept()
            except OSError:
                continue
            accepted.append(address)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield sock.getsockname()[1], accepted
    stop.set()
    thread.join()
    sock.close()


@pytest.mark.parametrize(
    ("extra", "line", "words"),
    [
        ('[[targets]]\nname = "first"\ndbname = "x"\n', 10, "already used on line 6"),
        ('[[targets]]\nname = "later"\n', 10, "has no dbname"),
        ('[[targets]]\nname = "later"\ndbname = "x"\nhots = "typo"\n', 13, "unknown key 'hots'"),
    ],
)
def test_a_bad_file_is_refused_before_any_connection(
    tmp_path: Path, listener: tuple[int, list[object]], extra: str, line: int, words: str
) -> None:
    port, accepted = listener
    text = (
        f'[defaults]\nhost = "127.0.0.1"\nport = {port}\nuser = "u"\n\n'
        f'[[targets]]\nname = "first"\ndbname = "x"\n\n{extra}'
    )
    path = write(tmp_path, text)
    for task in ("fleet.upgrade", "fleet.check", "fleet.verify", "fleet.status"):
        result = run_inv(task, "--targets", str(path))
        assert result.returncode == 2, result.stdout + result.stderr
        assert words in result.stderr and f"line {line}:" in result.stderr
        assert "Traceback" not in result.stderr
    assert accepted == []
    # The same file, fixed, does connect: the listener would have seen it.
    path.write_text(text[: -len(extra)], encoding="utf-8")
    result = run_inv("fleet.status", "--targets", str(path))
    assert result.returncode == 1 and "first" in result.stderr
    assert accepted


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--parallel", "0"], "--parallel '0'"),
        (["--canary", "some"], "--canary 'some'"),
        (["--shard", "2/2"], "--shard '2/2'"),
        (["--rev", "base"], "does not downgrade"),
    ],
)
def test_bad_arguments_are_usage_errors(
    tmp_path: Path, listener: tuple[int, list[object]], flags: list[str], words: str
) -> None:
    port, accepted = listener
    path = write(
        tmp_path,
        f'[[targets]]\nname = "a"\nhost = "127.0.0.1"\nport = {port}\nuser = "u"\ndbname = "d"\n',
    )
    result = run_inv("fleet.upgrade", "--targets", str(path), *flags)
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr
    assert accepted == []


def test_reports_that_are_not_fleet_reports(tmp_path: Path) -> None:
    (tmp_path / "r.json").write_text('{"something": "else"}')
    result = run_inv("fleet.report", str(tmp_path / "r.json"))
    assert result.returncode == 2 and "is not a fleet report" in result.stderr
    missing = run_inv("fleet.report")
    assert missing.returncode == 2 and "reports" in missing.stderr


def run_limited(*args: str) -> subprocess.CompletedProcess[str]:
    """`inv` with its address space capped at 1 GiB and a short timeout: a task that reads a
    device or a FIFO whole fails here instead of taking the machine's memory or hanging."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    return subprocess.run(
        [str(BIN / "inv"), *args],
        cwd=ROOT,
        env=cli_env(),
        input="",
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=cap,
    )


@pytest.mark.parametrize("holder", ["targets file", "service_file"])
@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "large", "folder"])
def test_only_small_regular_files_are_read(
    tmp_path: Path, listener: tuple[int, list[object]], holder: str, kind: str
) -> None:
    port, accepted = listener
    if kind == "/dev/zero":
        odd = Path("/dev/zero")
    elif kind == "fifo":
        odd = tmp_path / "pipe"
        os.mkfifo(odd)  # nobody writes: opening it for reading would wait forever
    elif kind == "large":
        odd = tmp_path / "large.conf"
        odd.write_text("# padding\n" * 200_000)  # 2 MB of comments
    else:
        odd = tmp_path / "folder"
        odd.mkdir()
    targets = write(
        tmp_path,
        f'[[targets]]\nname = "a"\nhost = "127.0.0.1"\nport = {port}\nuser = "u"\n'
        f'dbname = "d"\nservice = "s"\nservice_file = "{odd}"\n',
    )
    path = odd if holder == "targets file" else targets
    # What would be read without end (a device, a FIFO) is tried in a capped child; a large
    # file or a folder is refused in-process as well.
    run = run_limited if kind in ("/dev/zero", "fifo") else run_inv
    for task in ("fleet.status", "fleet.upgrade"):
        result = run(task, "--targets", str(path))
        assert result.returncode == 2, result.stdout + result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and str(odd) in lines[0], result.stderr
        assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    assert accepted == []
