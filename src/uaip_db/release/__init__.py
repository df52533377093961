"""`inv release.check`: the release checklist as a command, written out as a report to sign.

Against the configured (production) database it says what code is released (the git commit, and
whether the checkout is exactly that commit), lists the revisions to apply with their SQL and the
schema change they make, lints them, takes a backup and proves it restorable, rehearses the
upgrade on a restored copy, runs the application's start-up check on that copy, and writes the
rollback plan with the cost of each way back. The database itself is only read and dumped;
nothing is applied to it.

- `check`: runs the items and writes the report
- `items`: the items; `rollback`: the rollback plan and its costs
- `source`: the git commit and the state of the checkout; `context`: who ran it, versions
- `sql`: the rendered SQL read back per revision, and its digest
- `report`: the report (markdown), its SQL appendix and JSON twin, written without overwriting
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["FAIL", "PASS", "Item", "ReleaseReport", "release_check", "write_new"]

if TYPE_CHECKING:
    from uaip_db.release.check import release_check
    from uaip_db.release.report import FAIL, PASS, Item, ReleaseReport, write_new


def __getattr__(name: str) -> Any:
    # Imported on first use: the package imports none of its modules, so none imports it back.
    if name == "release_check":
        from uaip_db.release import check  # noqa: PLC0415

        return check.release_check
    if name in __all__:
        from uaip_db.release import report  # noqa: PLC0415

        return getattr(report, name)
    raise AttributeError(name)
