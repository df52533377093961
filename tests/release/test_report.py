"""The report's shape: a one-screen summary, the items in full, the SQL appendix, the JSON twin."""

from __future__ import annotations

import contextlib
import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import pages, small_disk, sql
from tests.release.conftest import psql_file
from uaip_db.errors import UaipDbError
from uaip_db.release.context import RunContext
from uaip_db.release.report import (
    APPENDIX,
    FAIL,
    PASS,
    Item,
    ReleaseReport,
    ReportNames,
    ensure_writable,
    write_report,
    write_set,
)
from uaip_db.release.source import SourceState
from uaip_db.settings import DatabaseConfig

NAMES = ReportNames("release-20261127T120000Z")


def sample_report() -> ReleaseReport:
    report = ReleaseReport(
        "postgresql://app:***@db:5432/uaip", "aaa", "bbb", ["bbb Add things"], env="production"
    )
    report.items = [
        Item(
            "SQL to run", PASS, [f"Full text: `{APPENDIX}`", *["COMMENT ON x;"] * 200], "sql", "2"
        ),
        Item("Rehearsal", FAIL, ["it broke"], "rehearsal", "1 problem(s)"),
        Item("Application", PASS, ["ok"], "application", "start-up check accepts it"),
    ]
    report.source = SourceState("/repo", "0123456789abcdef", "main")
    report.context = RunContext(
        report.database, "production", "ana@host", "2026-11-27 12:00:00 UTC", {"uaip-db": "1.1.0"}
    )
    report.decisions = ["Whether to release at all.", "Which way back."]
    report.upgrade_sql = "BEGIN;\nSELECT 1;\nCOMMIT;\n"
    report.rollback_sql = "BEGIN;\nSELECT 2;\nCOMMIT;\n"
    return report


def test_the_summary_comes_first_and_fits_on_a_screen() -> None:
    text = sample_report().markdown("2026-11-27 12:00:00 UTC", NAMES)
    lines = text.splitlines()
    details = next(n for n, line in enumerate(lines) if line.startswith("## "))
    assert details <= 40
    screen = "\n".join(lines[:details])
    assert "Overall: **FAIL** (1 of 3 items failed: 2 Rehearsal)." in screen
    assert "**What**: 1 revision(s), `aaa` -> `bbb` (head)" in screen
    assert "**Where**: `postgresql://app:***@db:5432/uaip`, DB_ENV=production" in screen
    assert "**Code**: commit `0123456789abcdef` on `main`, clean" in screen
    assert "| 2 | Rehearsal | FAIL | 1 problem(s) |" in screen
    assert "1. Whether to release at all." in screen and "2. Which way back." in screen
    assert "COMMENT ON" not in screen
    assert "Full text: `release-20261127T120000Z.sql`" in text and APPENDIX not in text
    assert "(item 3, PASS)" in text  # the application owner's box names its check


def test_the_json_twin_has_the_same_items_and_verdicts() -> None:
    report = sample_report()
    data = json.loads(report.to_json("2026-11-27 12:00:00 UTC", NAMES))
    assert data["verdict"] == FAIL and data["passed"] is False
    assert [(i["number"], i["key"], i["status"]) for i in data["items"]] == [
        (1, "sql", PASS),
        (2, "rehearsal", FAIL),
        (3, "application", PASS),
    ]
    assert data["failed"] == ["2 Rehearsal"]
    assert data["source"]["commit"] == "0123456789abcdef" and data["source"]["clean"] is True
    assert data["files"]["sql"] == "release-20261127T120000Z.sql"
    assert data["items"][0]["details"][0] == "Full text: `release-20261127T120000Z.sql`"


def test_the_appendix_holds_both_parts_and_stops_psql_running_it_whole() -> None:
    text = sample_report().appendix("2026-11-27 12:00:00 UTC", NAMES)
    lines = text.splitlines()
    assert lines.index("\\quit") < lines.index("SELECT 1;") < lines.index("SELECT 2;")
    assert "Part 2: the rollback by downgrade `bbb` -> `aaa`" in text


def test_a_report_never_overwrites_any_of_its_twins(tmp_path: Path) -> None:
    stem = "release-20261127T120000Z"
    (tmp_path / f"{stem}.sql").write_text("an older appendix whose report was moved away")

    def render(names: ReportNames) -> dict[str, str]:
        return {suffix: names.stem for suffix in (".md", ".sql", ".json")}

    first = write_set(tmp_path, stem, (".md", ".sql", ".json"), render)
    second = write_set(tmp_path, stem, (".md", ".sql", ".json"), render)
    assert first[".md"].name == f"{stem}-2.md" and second[".md"].name == f"{stem}-3.md"
    assert (tmp_path / f"{stem}.sql").read_text().startswith("an older appendix")
    assert not (tmp_path / f"{stem}.md").exists()  # the half-claimed stem was given back
    assert second[".json"].read_text() == f"{stem}-3"


def test_psql_runs_nothing_of_the_appendix_given_whole(empty_db: DatabaseConfig) -> None:
    report = sample_report()
    report.upgrade_sql = "CREATE TABLE upgraded (id integer);\n"
    report.rollback_sql = "CREATE TABLE rolled_back (id integer);\n"
    ran = psql_file(empty_db, report.appendix("2026-11-27 12:00:00 UTC", NAMES))
    assert ran.returncode == 0, ran.stderr
    assert "holds the upgrade and the rollback" in ran.stdout
    assert sql(empty_db, "SELECT to_regclass('upgraded'), to_regclass('rolled_back')") == [
        (None, None)
    ]


def test_revision_docstrings_and_server_text_come_out_inert() -> None:
    from uaip_db.migrations.history import Revision
    from uaip_db.release.items import fenced, revisions_item

    payload = "<img src=x onerror=alert(1)> ![x](https://evil/track.png) \x1b[32mdone\x1b[0m"
    report = sample_report()
    report.items = [
        revisions_item([Revision("c0ffee", ["bbb"], payload, "versions/c0ffee_x.py")]),
        Item("Rehearsal", FAIL, [f"failed: {payload}", *fenced(f"```\n{payload}")], "x", payload),
    ]
    text = report.markdown("2026-11-27 12:00:00 UTC", NAMES)

    assert "<img" not in text and "\x1b" not in text
    assert not re.search(r"(?<!\\)!\[", text)  # an image only when not escaped
    assert "1. `c0ffee` &lt;img src=x onerror=alert(1)> \\![x](https://evil/track.png)" in text
    assert "\\x1b[32mdone\\x1b[0m" in text


def fill(disk: Path) -> None:
    """Write into `disk` until it is full."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"x" * 4096)
    finally:
        os.close(fd)


@pytest.mark.root  # a full disk is a small tmpfs, which only root may mount
def test_a_full_disk_leaves_neither_the_report_nor_a_twin(tmp_path: Path) -> None:
    report = sample_report()
    sizes = {
        suffix: len(text.encode())
        for suffix, text in {
            ".md": report.markdown("now", NAMES),
            ".sql": report.appendix("now", NAMES),
        }.items()
    }
    # Room for the report and its appendix, not for the JSON twin (the last written).
    with small_disk(tmp_path / "reports", pages(sizes[".md"]) + pages(sizes[".sql"])) as disk:
        with pytest.raises(UaipDbError) as raised:
            write_report(disk, NAMES.stem, report, "now")
        message = str(raised.value)
        assert "\n" not in message and str(disk) in message
        assert "No space left on device" in message
        assert sorted(path.name for path in disk.iterdir()) == []


@pytest.mark.root
def test_a_full_reports_folder_is_named_before_the_long_work(tmp_path: Path) -> None:
    with small_disk(tmp_path / "reports", 64 * 1024) as disk:
        fill(disk)
        with pytest.raises(UaipDbError) as raised:
            ensure_writable(disk)
        message = str(raised.value)
        assert "\n" not in message and str(disk) in message
        assert "No space left on device" in message
        assert sorted(path.name for path in disk.iterdir()) == ["filler"]


def test_the_revisions_item_gives_each_phase_and_the_deploy_order() -> None:
    from uaip_db.release.items import order_of_operations

    lines = order_of_operations(
        [("e1", "expand"), ("e2", "expand"), ("c1", "contract"), ("e3", "expand")]
    )
    assert lines[0] == "Order:"
    assert lines[1].startswith("1. `inv db.upgrade --rev e2` (expand: e1, e2)")
    assert lines[2].startswith("2. Deploy the new release to every instance")
    assert lines[3] == "3. `inv db.upgrade` (contract: c1)."
    assert "split the release" in lines[4]
    only_expand = order_of_operations([("e1", "expand")])
    assert len(only_expand) == 1 and "expand only" in only_expand[0]
