"""The checklist's items, built from the committed snapshots."""

from __future__ import annotations

from tests.conftest import EMAIL, WIDEN
from uaip_db.migrations.baseline import BASELINE_REVISION
from uaip_db.release.items import schema_change_item


def test_the_schema_change_counts_tables_not_change_lines() -> None:
    # EMAIL adds a column and its index, both on sessions: two changes, one table.
    added = schema_change_item(BASELINE_REVISION, EMAIL)
    assert added.brief == "2 change(s) in 1 table(s)"
    assert sum(line.startswith("- sessions: ") for line in added.body) == 2
    assert schema_change_item(EMAIL, EMAIL).brief == "none"
    assert schema_change_item(EMAIL, WIDEN).brief == "1 change(s) in 1 table(s)"
