"""uaip_db.docs.output: writing docs/schema/ and checking it against what is rendered."""

from __future__ import annotations

import re
from pathlib import Path

from tests.docs.conftest import BASELINE, HEAD, committed
from uaip_db import generated
from uaip_db.catalog.snapshot import Snapshot
from uaip_db.docs import markdown, output

# --- check and write ----------------------------------------------------------------------------


def test_check_is_empty_when_the_committed_files_are_the_rendered_ones(
    tmp_path: Path, head: Snapshot
) -> None:
    files = markdown.render(head, revision=HEAD)

    assert output.write(tmp_path, files) == [tmp_path / "README.md"]
    assert output.check(tmp_path, files) == []
    assert output.write(tmp_path, files) == []


def test_check_reports_a_changed_file_with_a_diff(tmp_path: Path, head: Snapshot) -> None:
    output.write(tmp_path, markdown.render(committed(BASELINE), revision=BASELINE))

    lines = output.check(tmp_path, markdown.render(head, revision=HEAD))

    assert lines[0] == "README.md: differs"
    assert "--- README.md (committed)" in lines
    assert "+++ README.md (rendered)" in lines
    assert "+| `email` | `character varying(255)` | yes |  |  |" in lines
    assert len(lines) <= generated.DIFF_LINES_PER_FILE + 2


def test_check_cuts_a_long_diff(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("".join(f"old {n}\n" for n in range(100)))

    lines = output.check(tmp_path, {"README.md": "".join(f"new {n}\n" for n in range(100))})

    assert len(lines) == generated.DIFF_LINES_PER_FILE + 2
    assert re.fullmatch(r"README\.md: \.\.\. \d+ more lines of difference", lines[-1])


def test_check_reports_missing_and_extra_files(tmp_path: Path) -> None:
    assert output.check(tmp_path / "absent", {"README.md": "x\n"}) == ["README.md: missing"]
    (tmp_path / "notes.md").write_text("mine\n")
    (tmp_path / "README.md").write_text("x\n")

    assert output.check(tmp_path, {"README.md": "x\n"}) == [
        "notes.md: not rendered from the snapshot (extra file)"
    ]


def test_check_notices_line_endings(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_bytes(b"x\r\n")
    assert output.check(tmp_path, {"README.md": "x\n"}) == [
        "README.md: differs in line endings or the final newline only"
    ]


def test_write_removes_stale_generated_files_only(tmp_path: Path) -> None:
    stale = tmp_path / "old.md"
    stale.write_text(f"<!-- {output.GENERATED_NOTE} -->\nold\n")
    mine = tmp_path / "notes.md"
    mine.write_text("written by a person\n")

    changed = output.write(tmp_path, {"README.md": "new\n"})

    assert sorted(changed) == sorted([tmp_path / "README.md", stale])
    assert not stale.exists()
    assert mine.read_text() == "written by a person\n"
    assert (tmp_path / "README.md").read_bytes() == b"new\n"
