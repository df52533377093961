"""The one way commands talk to a person: lines on stdout, problems on stderr, JSON on request,
and every failure turned into one plain line and the right exit status."""

from __future__ import annotations

import atexit
import errno
import json
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TextIO

from uaip_db.errors import INTERRUPTED, USAGE, SettingsError, UaipDbError
from uaip_db.parsers import SECONDS

# invoke is imported where a task needs it (marked for ruff's PLC0415): `inv` has loaded it
# already, and without it `python -c "import uaip_db.cli.migrate"` loads 145 modules, not 320.
from uaip_db.pg import explain
from uaip_db.settings import CHECKED_BEFORE_ANY_COMMAND, DEBUG, DatabaseConfig
from uaip_db.text import visible

Say = Callable[[str], None]
UNWRITABLE = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})


# Everything this tool prints passes through `visible` (uaip_db.text): a server's message, a
# revision's docstring or a file's name may carry escape sequences that would recolour or
# rewrite the terminal (a failed run shown as a green "Upgrade finished"). say, complain, the
# one line `reported` ends a failure with, and VisibleStream (what Alembic writes) are the
# ways out; JSON passes through them too and stays the same JSON.

# Where `say` writes while `reported(json_only=True)` sends everything else to stderr, and
# whether it wrote there: a `--json` command that failed before its result says so in JSON.
_result_stream: TextIO | None = None
_result_written = False


def say(line: str) -> None:
    """A line of progress or result, on stdout (the library's `report` callbacks end here)."""
    global _result_written
    _result_written = _result_written or _result_stream is not None
    stream = _result_stream or sys.stdout
    try:
        print(visible(line), file=stream, flush=True)
    except BrokenPipeError:
        # The reader left (`inv release.check | head -1`). The command goes on to its end and
        # its exit status, its lines going nowhere: stopping at a line would leave an upgrade
        # or a release check half done and end it with a status that says nothing of it.
        send_nowhere(stream)


def complain(text: str) -> None:
    """What went wrong, on stderr."""
    print(visible(text), file=sys.stderr, flush=True)


class VisibleStream:
    """A text stream that writes through to `stream` with control characters made visible."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.encoding = getattr(stream, "encoding", None) or "utf-8"

    def write(self, text: str) -> int:
        try:
            return self.stream.write(visible(text))
        except BrokenPipeError:  # as in `say`: the command goes on, its output going nowhere
            send_nowhere(self.stream)
            return len(text)

    def flush(self) -> None:
        self.stream.flush()


def finish(exit_code: int) -> NoReturn:
    """End the command with `exit_code` after its result was already printed."""
    from invoke.exceptions import Exit  # noqa: PLC0415

    raise Exit(code=exit_code)


@contextmanager
def timed(label: str, out: Say = say) -> Iterator[None]:
    started = time.perf_counter()
    yield
    out(f"{label} in {time.perf_counter() - started:.2f} s.")


def debugging() -> bool:
    """`inv --debug` (or UAIP_DEBUG, or Invoke's INVOKE_DEBUG, which turns on its debug log)
    shows tracebacks instead of one line. A UAIP_DEBUG that is neither on nor off counts as off
    here: `reported` names it."""
    try:
        asked: bool = DEBUG.read()
    except SettingsError:
        asked = False
    return asked or logging.getLogger("invoke").isEnabledFor(logging.DEBUG)


@contextmanager
def reported(*, json_only: bool = False, settings_first: bool = True) -> Iterator[None]:
    """Turn the library's errors into one line and an exit status. With `json_only` (`--json`),
    stdout carries only what `say` writes: anything else printed meanwhile (a revision's
    `print()`) goes to stderr. `settings_first`: refuse a bad setting read deep inside a command
    before it starts (settings.CHECKED_BEFORE_ANY_COMMAND); `db.status` shows it instead."""
    from invoke.exceptions import Exit  # noqa: PLC0415

    global _result_stream, _result_written
    kept = sys.stdout
    if json_only:
        _result_stream, sys.stdout, _result_written = kept, sys.stderr, False
    try:
        # A bad value is named (exit 2) before the task does anything; even db.status, which
        # shows the others marked, refuses a UAIP_DEBUG neither on nor off.
        for setting in CHECKED_BEFORE_ANY_COMMAND if settings_first else (DEBUG,):
            setting.read()
        yield
    except UaipDbError as error:
        failed_without_result(str(error), error.exit_code)
        if debugging():
            traceback.print_exc()  # what --debug is for; the exit status stays the same
            raise Exit(code=error.exit_code) from None
        raise Exit(visible(str(error)) or None, code=error.exit_code) from None
    except BrokenPipeError:
        # The reader went away and something other than `say` wrote: stopped there, which the
        # status says (1), quietly otherwise.
        send_nowhere(sys.stdout)
        raise Exit(code=1) from None
    except KeyboardInterrupt:
        raise Exit("Interrupted; run the same task again to finish.", code=INTERRUPTED) from None
    except OSError as error:
        # A file the task writes (a new revision, docs/schema/, reports/) in a checkout mounted
        # read-only or owned by someone else: say which, not a traceback.
        if debugging() or error.errno not in UNWRITABLE or error.filename is None:
            raise
        raise Exit(
            visible(
                f"Cannot write {error.filename}: {error.strerror}. Run the task from a checkout "
                "this user may write to, or make that folder writable."
            ),
            code=USAGE,
        ) from None
    except Exception as error:
        if not _is_database_error(error):
            raise
        explained = str(explain(error, DatabaseConfig.from_env()))
        failed_without_result(explained, USAGE)
        if debugging():
            traceback.print_exc()
            raise Exit(code=USAGE) from None
        raise Exit(visible(explained), code=USAGE) from None
    finally:
        if json_only:
            _result_stream, sys.stdout = None, kept


def failed_without_result(message: str, exit_code: int) -> None:
    """Under `--json`, a failure before the command wrote its result still leaves JSON on
    stdout (what a script parses), with the same line stderr gets."""
    if _result_stream is not None and not _result_written:
        say(error_json(message, exit_code))


def error_json(message: str, exit_code: int) -> str:
    """What a `--json` command prints on stdout when it fails before its result."""
    return json.dumps({"error": message, "exit_code": exit_code})


def usage_errors_exit_2() -> None:
    """Invoke ends a task-argument mistake (unknown flag, missing value or positional) with
    exit 1; this tool promises 2 for usage errors. tasks.py calls this once, when Invoke loads
    it, which is before Invoke parses the tasks' arguments."""
    from invoke.exceptions import Exit, ParseError  # noqa: PLC0415
    from invoke.program import Program  # noqa: PLC0415

    original = Program.parse_tasks
    if getattr(original, "exits_2", False):
        return

    def parse_tasks(self: Program) -> None:
        try:
            original(self)
        except ParseError as error:
            said = str(error).rstrip("!. ")
            unknown = said.startswith("No idea what '") and not said.startswith("No idea what '-")
            hint = (
                "`inv --list` shows the tasks" if unknown else "`inv --help TASK` lists its options"
            )
            word = said[len("No idea what '") :].rsplit("'", 1)[0] if unknown else ""
            if unknown and "db.psql" in (self.argv or []):
                # `inv db.psql "select 1"`: Invoke took the query for a task's name.
                hint = f'db.psql takes its SQL as --command: `inv db.psql --command "{word}"`'
            message = visible(f"{said}. {hint}.")
            if "--json" in (self.argv or []):  # stdout is JSON even then (the README)
                print(error_json(message, USAGE), flush=True)
            raise Exit(message, code=USAGE) from None

    parse_tasks.exits_2 = True  # type: ignore[attr-defined]
    Program.parse_tasks = parse_tasks  # type: ignore[method-assign]


def send_nowhere(stream: TextIO) -> None:
    """`stream`'s reader went away: what is still written to it (Python flushes stdout once more
    on its way out) goes to /dev/null instead of raising BrokenPipeError again."""
    nowhere = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(nowhere, stream.fileno())
    finally:
        os.close(nowhere)


def quiet_when_the_reader_leaves() -> None:
    """`inv --list | head` (the reader closes the pipe early) ends quietly, as other
    command-line tools do, instead of with Python's traceback. tasks.py calls this once."""
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, trace: Any) -> None:
        if issubclass(kind, BrokenPipeError):
            send_nowhere(sys.stdout)  # Python flushes stdout once more on its way out
            return
        previous(kind, value, trace)

    def flush_or_let_go() -> None:
        # Output still in stdout's buffer (`inv --list` writes it all at once) meets the closed
        # pipe only at exit, where Python would print "Exception ignored ... Broken pipe".
        # It ends as the unbuffered case does (an uncaught BrokenPipeError): quietly, status 1.
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            send_nowhere(sys.stdout)
            sys.stderr.flush()
            os._exit(1)

    sys.excepthook = hook
    atexit.register(flush_or_let_go)


def _is_database_error(error: Exception) -> bool:
    return type(error).__module__.split(".")[0] in ("psycopg", "sqlalchemy")


def seconds(value: str, flag: str) -> float:
    """A duration flag in seconds (`--lock-wait 0.5`), or a usage error naming the flag."""
    return SECONDS.flag(value, flag)
