"""How the cli layer reads duration flags (cli.reporter)."""

from __future__ import annotations

import pytest

from uaip_db.cli.reporter import seconds
from uaip_db.errors import UsageError


def test_a_duration_flag_takes_zero_or_more_seconds() -> None:
    assert seconds("0", "--lock-wait") == 0.0
    assert seconds("2.5", "--lock-wait") == 2.5
    for bad in ("-1", "soon", ""):
        with pytest.raises(UsageError) as refused:
            seconds(bad, "--max-writer-wait")
        assert str(refused.value) == (
            f"--max-writer-wait {bad!r} is not a number of seconds (0 or more)."
        )
