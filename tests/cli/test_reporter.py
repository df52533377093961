"""How the cli layer reads duration flags, and shows what came from elsewhere (cli.reporter)."""

from __future__ import annotations

import pytest

from tests.conftest import run_inv, sql
from uaip_db.cli.reporter import seconds
from uaip_db.errors import UsageError
from uaip_db.settings import DatabaseConfig


def test_a_duration_flag_takes_zero_or_more_seconds() -> None:
    assert seconds("0", "--lock-wait") == 0.0
    assert seconds("2.5", "--lock-wait") == 2.5
    for bad in ("-1", "soon", ""):
        with pytest.raises(UsageError) as refused:
            seconds(bad, "--max-writer-wait")
        assert str(refused.value) == (
            f"--max-writer-wait {bad!r} is not a number of seconds (0 or more)."
        )


# --- what came from a server, a file or a revision reaches the terminal with escapes shown ------

GREEN = "\x1b[32mUpgrade finished\x1b[0m"


def test_every_way_out_shows_control_characters(capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import json

    from invoke.exceptions import Exit

    from uaip_db.cli.reporter import VisibleStream, complain, reported, say
    from uaip_db.errors import MigrationError

    say(f"ok {GREEN}")
    complain(f"bad \x9b31m\u202e {GREEN}")
    say(json.dumps({"error": f"{GREEN}\x7f"}))
    out, err = capsys.readouterr()
    assert "\x1b" not in out + err and "\x9b" not in err and "\u202e" not in err
    assert out.splitlines()[0] == "ok \\x1b[32mUpgrade finished\\x1b[0m"
    assert err == "bad \\u009b31m\\u202e \\x1b[32mUpgrade finished\\x1b[0m\n"
    assert json.loads(out.splitlines()[1]) == {"error": f"{GREEN}\x7f"}
    with pytest.raises(Exit) as ended, reported():
        raise MigrationError(f"Revision x failed: {GREEN}.")
    assert ended.value.message == "Revision x failed: \\x1b[32mUpgrade finished\\x1b[0m."
    assert ended.value.code == 1
    stream = io.StringIO()
    VisibleStream(stream).write(f"abc -> def (head), {GREEN}\n")
    assert stream.getvalue() == "abc -> def (head), \\x1b[32mUpgrade finished\\x1b[0m\n"


def test_a_server_error_with_escapes_reaches_the_terminal_shown(empty_db: DatabaseConfig) -> None:
    """An event trigger whose error paints a failed upgrade as a green "Upgrade finished"."""
    sql(
        empty_db,
        "CREATE FUNCTION paint() RETURNS event_trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION E'\\x1b[32mUpgrade finished\\x1b[0m'; END $$; "
        "CREATE EVENT TRIGGER paint ON ddl_command_start EXECUTE FUNCTION paint()",
    )
    result = run_inv("db.upgrade", database=empty_db)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    assert "\\x1b[32mUpgrade finished\\x1b[0m" in result.stderr
    assert "Traceback" not in result.stderr


def test_uaip_debug_is_on_or_off(monkeypatch: pytest.MonkeyPatch) -> None:
    from invoke.exceptions import Exit

    from uaip_db.cli.reporter import debugging, reported

    monkeypatch.setenv("UAIP_DEBUG", "0")
    assert not debugging()  # any value, 0 too, used to turn tracebacks on
    monkeypatch.setenv("UAIP_DEBUG", "yes")
    assert debugging()
    monkeypatch.setenv("UAIP_DEBUG", "maybe")
    with pytest.raises(Exit) as ended, reported():
        pass
    assert ended.value.code == 2
    assert str(ended.value.message).startswith("UAIP_DEBUG='maybe' is not on or off")
