"""The shared parsers of settings and flags: how a variable's text (or a flag's) becomes a value.

Each `Parser` says what it accepts; a value it refuses is one line naming the variable (a
SettingsError: `NAME='text' is not ...; fix it or unset it.`) or the flag (a UsageError), exit 2.
settings.py builds its table of variables from these; `read_dotenv` reads `.env`.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from uaip_db.errors import SettingsError, UsageError

V = TypeVar("V", covariant=True)


@dataclass(frozen=True)
class Parser(Generic[V]):
    """How a setting's text becomes a value. `accepts` says what it takes (in messages and the
    docs); `convert` gets the stripped text and the name it came from, and raises ValueError
    when it does not accept it (or SettingsError with a message of its own naming that name)."""

    accepts: str
    convert: Callable[[str, str], V]

    def parse(self, text: str, name: str, fix: str = "fix it or unset it") -> V:
        try:
            return self.convert(text.strip(), name)
        except ValueError:
            raise SettingsError(f"{name}={text!r} is not {self.accepts}; {fix}.") from None

    def flag(self, value: str | int, flag: str, meaning: str = "") -> V:
        """The same check for a command-line flag (`--lock-wait 0.5`): a usage error naming it."""
        try:
            return self.convert(str(value).strip(), flag)
        except ValueError:
            said = f"{meaning}; use {self.accepts}" if meaning else self.accepts
            raise UsageError(f"{flag} {value!r} is not {said}.") from None


def seconds(*, above_zero: bool = False) -> Parser[float]:
    def convert(text: str, _name: str) -> float:
        number = float(text)
        if not (number > 0 if above_zero else number >= 0) or number == float("inf"):
            raise ValueError(text)
        return number

    return Parser(
        "a number of seconds above 0" if above_zero else "a number of seconds (0 or more)",
        convert,
    )


def whole_number(least: int) -> Parser[int]:
    def convert(text: str, _name: str) -> int:
        if not (text.isascii() and text.isdigit()) or int(text) < least:
            raise ValueError(text)
        return int(text)

    return Parser(f"a whole number of {least} or more", convert)


def choice(*options: str) -> Parser[str]:
    """One of `options`, in any case."""

    def convert(text: str, _name: str) -> str:
        if text.lower() not in options:
            raise ValueError(text)
        return text.lower()

    return Parser(f"one of {', '.join(options)}", convert)


# PostgreSQL keeps lock_timeout and statement_timeout in milliseconds as an int: a longer value
# fails the connection that sets it ("invalid value for parameter"), long after the setting.
LONGEST_DURATION_MS = 2**31 - 1
MS_PER_UNIT = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, "d": 86_400_000}


def _duration(text: str, _name: str) -> str:
    found = re.fullmatch(r"(\d+)(ms|s|min|h|d)?", text)
    if not found or int(found.group(1)) * MS_PER_UNIT[found.group(2) or "ms"] > LONGEST_DURATION_MS:
        raise ValueError(text)
    return text


def _folder(text: str, _name: str) -> Path:
    # Refused, not passed over: a typo would otherwise run other programs without a word.
    if not Path(text).expanduser().is_dir():
        raise ValueError(text)
    return Path(text).expanduser()


def _on_off(text: str, _name: str) -> bool:
    if text.lower() not in ON + OFF:
        raise ValueError(text)
    return text.lower() in ON


def _port(text: str, _name: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= 65535:
        raise ValueError(text)
    return int(text)


ON = ("1", "true", "yes", "on")
OFF = ("0", "false", "no", "off")
TEXT = Parser("any text", lambda text, _name: text)
SECONDS = seconds()
DURATION = Parser("a duration like 5s, 500ms or 15min, at most 24 days", _duration)
PATH = Parser("a path", lambda text, _name: Path(text).expanduser().resolve())
FOLDER = Parser("a folder", _folder)
ON_OFF = Parser(f"on or off ({', '.join(ON)} / {', '.join(OFF)})", _on_off)
PORT = Parser("a port number (1-65535)", _port)


def read_dotenv(path: Path) -> dict[str, str]:
    """The settings in `.env`. A line that cannot be parsed is refused: passed over, as
    python-dotenv does with a warning, the setting it meant would silently fall back to its
    default, which may name another database."""
    if not path.is_file():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
        unreadable = [
            # a binding's text starts with the blank lines before it
            binding.original.line + _leading_newlines(binding.original.string)
            for binding in parse_stream(io.StringIO(text))
            if binding.error
        ]
    except (UnicodeDecodeError, OSError) as error:
        reason = "is not UTF-8 text" if isinstance(error, UnicodeDecodeError) else "cannot be read"
        raise SettingsError(f"{path} {reason}; fix or remove it.") from None
    if unreadable:  # before python-dotenv reads it: it would log its own warning first
        raise SettingsError(
            f"{path} line {unreadable[0]} is not a setting (NAME=value, with any quote it opens "
            "closed); fix or remove it."
        )
    values = dotenv_values(stream=io.StringIO(text))
    return {key: value for key, value in values.items() if value is not None}


def _leading_newlines(text: str) -> int:
    return text[: len(text) - len(text.lstrip())].count("\n")
