"""uaip_db.generated: write generated files that changed, or say which differ."""

from __future__ import annotations

from pathlib import Path

from uaip_db import generated
from uaip_db.generated import CHANGED, EXTRA, MISSING, Difference


def test_write_writes_only_what_changed_and_compare_then_finds_nothing(tmp_path: Path) -> None:
    files = {"a.txt": "one\n", "sub/b.txt": "two\n"}

    assert generated.write(tmp_path, files) == [tmp_path / "a.txt", tmp_path / "sub" / "b.txt"]
    assert (tmp_path / "sub" / "b.txt").read_bytes() == b"two\n"
    assert generated.compare(tmp_path, files) == []
    assert generated.write(tmp_path, files) == []
    assert generated.write(tmp_path, {**files, "a.txt": "uno\n"}) == [tmp_path / "a.txt"]


def test_compare_names_missing_extra_and_changed_files_by_name(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("old\n")
    (tmp_path / "c.txt").write_text("mine\n")

    found = generated.compare(tmp_path, {"b.txt": "new\n", "a.txt": "x\n"})

    assert [(d.name, d.state) for d in found] == [
        ("a.txt", MISSING),
        ("b.txt", CHANGED),
        ("c.txt", EXTRA),
    ]
    assert found[1].excerpt == (
        "b.txt: differs",
        "--- b.txt (committed)",
        "+++ b.txt (rendered)",
        "@@ -1 +1 @@",
        "-old",
        "+new",
    )
    assert generated.compare(tmp_path / "absent", {"a.txt": "x\n"}) == [
        Difference("a.txt", MISSING)
    ]


def test_the_diff_excerpt_is_cut(tmp_path: Path) -> None:
    old = "".join(f"old {n}\n" for n in range(100))
    new = "".join(f"new {n}\n" for n in range(100))

    excerpt = generated.diff_excerpt("f", old, new)

    assert len(excerpt) == generated.DIFF_LINES_PER_FILE + 2
    assert (
        excerpt[-1] == f"f: ... {3 + 200 - generated.DIFF_LINES_PER_FILE} more lines of difference"
    )
    assert generated.diff_excerpt("f", "x\r\n", "x\n") == [
        "f: differs in line endings or the final newline only"
    ]
    assert generated.diff_excerpt("f", "x\n", "x\n") == []


def test_a_pattern_limits_the_folder_to_some_files(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not mine\n")
    (tmp_path / "gone.json").write_text("{}\n")

    assert generated.compare(tmp_path, {"a.json": "{}\n"}, pattern="*.json") == [
        Difference("a.json", MISSING),
        Difference("gone.json", EXTRA),
    ]
    changed = generated.write(tmp_path, {"a.json": "{}\n"}, pattern="*.json")

    assert changed == [tmp_path / "a.json", tmp_path / "gone.json"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["README.md", "a.json"]


def test_with_a_marker_only_stale_files_that_carry_it_are_removed(tmp_path: Path) -> None:
    (tmp_path / "old.md").write_text("<!-- made by us -->\nold\n")
    (tmp_path / "late.md").write_text("x" * generated.MARKER_SEARCH_CHARS + "made by us\n")
    (tmp_path / "notes.md").write_text("written by a person\n")

    changed = generated.write(tmp_path, {"README.md": "new\n"}, marker="made by us")

    assert changed == [tmp_path / "README.md", tmp_path / "old.md"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["README.md", "late.md", "notes.md"]


def test_universal_newlines_take_crlf_files_as_they_are(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_bytes(b"{\r\n}\r\n")
    files = {"a.json": "{\n}\n"}

    assert generated.compare(tmp_path, files, universal_newlines=True) == []
    assert generated.write(tmp_path, files, universal_newlines=True) == []
    assert (tmp_path / "a.json").read_bytes() == b"{\r\n}\r\n"
    assert [d.state for d in generated.compare(tmp_path, files)] == [CHANGED]
    assert generated.write(tmp_path, files) == [tmp_path / "a.json"]
    assert (tmp_path / "a.json").read_bytes() == b"{\n}\n"


def test_undecodable_bytes_are_a_difference_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"\xff\n")

    (difference,) = generated.compare(tmp_path, {"a.txt": "x\n"})

    assert difference.state == CHANGED and "-\ufffd" in difference.excerpt
    assert generated.write(tmp_path, {"a.txt": "\ufffd\n"}) == [tmp_path / "a.txt"]
