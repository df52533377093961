"""uaip_db.docs.settings: docs/SETTINGS.md, rendered from the settings table, kept current."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT, run_cli
from uaip_db.docs import settings as settings_doc
from uaip_db.settings import SETTINGS


def test_the_committed_settings_doc_is_current() -> None:
    assert settings_doc.differences() == [], "run `inv db.docs` and commit docs/SETTINGS.md"


def test_every_setting_is_a_row_with_its_default_and_what_it_accepts() -> None:
    rows = [line for line in settings_doc.render().splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == [setting.name for setting in SETTINGS]
    budget = next(row for row in rows if row.startswith("| `UAIP_LOCK_BUDGET`"))
    assert budget.startswith("| `UAIP_LOCK_BUDGET` | `60` | a number of seconds (0 or more) | ")
    assert "| `DB_HOST` (`.env`) | `localhost` |" in settings_doc.render()


def test_a_stale_settings_doc_is_found_and_rewritten(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UAIP_DB_ROOT", str(tmp_path))
    assert settings_doc.differences() == ["SETTINGS.md: missing"]
    assert settings_doc.write() == [tmp_path / "docs" / "SETTINGS.md"]
    assert settings_doc.differences() == [] and settings_doc.write() == []
    written = tmp_path / "docs" / "SETTINGS.md"
    written.write_text(written.read_text().replace("`UAIP_LOCK_BUDGET`", "`UAIP_LOCK_BUDGIT`"))
    found = settings_doc.differences()
    assert found[0] == "SETTINGS.md: differs" and any("UAIP_LOCK_BUDGIT" in line for line in found)


def test_db_docs_check_names_a_stale_settings_doc(checkout: Path) -> None:
    (checkout / "docs").mkdir()
    (checkout / "docs" / "SETTINGS.md").write_text("# Settings\n")
    result = run_cli("inv", "db.docs", "--check", env={"UAIP_DB_ROOT": str(checkout)})
    assert result.returncode == 1
    assert result.stderr.startswith(
        "docs/SETTINGS.md is not what the settings table renders:\nSETTINGS.md: differs\n"
    )
    assert result.stderr.strip().endswith("Run `inv db.docs`, then commit.")


def test_the_readme_points_at_it() -> None:
    assert "(docs/SETTINGS.md)" in (ROOT / "README.md").read_text()
