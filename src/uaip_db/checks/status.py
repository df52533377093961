"""The gate for CI and for application start-up: is the database at head, and can we trust it?

Exit codes of `inv db.check`: 0 at head; 3 when revisions are pending; 1 when something is wrong
(an unknown revision, several heads, a downgrade that silently does nothing, an applied migration
edited after it ran).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from uaip_db.checks.verify import edited_revisions
from uaip_db.errors import CHECK_FAILED, PENDING, CheckFailed, PendingMigrations
from uaip_db.migrations import history, ledger, runner
from uaip_db.pg import connection
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    pass


@dataclass
class MigrationStatus:
    database: str
    current: list[str]
    heads: list[str]
    pending: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if self.problems:
            return CHECK_FAILED
        return PENDING if self.pending else 0

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "exit_code": self.exit_code}, indent=2)

    def summary(self) -> str:
        at = ", ".join(self.current) or "base"
        if self.problems:
            return "\n".join(["Migration check failed:", *(f"  - {p}" for p in self.problems)])
        if self.pending:
            lines = [f"{self.database} is at {at}; {len(self.pending)} revision(s) pending:"]
            lines += [f"  {p}" for p in self.pending]
            lines.append("Run `inv db.upgrade`.")
            return "\n".join(lines)
        return f"{self.database} is at head {at}; the migration scripts check out."


def inspect(database: DatabaseConfig) -> MigrationStatus:
    index = history.load()
    with connection(database) as conn:
        current = list(runner.current_revisions_on(conn))
        recorded = ledger.entries(conn)
    status = MigrationStatus(database=database.display_url(), current=current, heads=index.heads)
    status.problems.extend(index.problems)
    unknown = [revision for revision in current if index.get(revision) is None]
    status.problems.extend(str(history.unknown_revision(revision)) for revision in unknown)
    if not unknown:
        status.pending = [f"{r.revision} {r.doc}" for r in index.pending(current)]
    status.problems.extend(edited_revisions(recorded, index))
    return status


def check_migrations(database: DatabaseConfig | None = None) -> MigrationStatus:
    """For the application's start-up: return quietly at head, raise with the reasons otherwise."""
    status = inspect(database or DatabaseConfig.from_env())
    if status.problems:
        raise CheckFailed(status.summary())
    if status.pending:
        raise PendingMigrations(status.summary())
    return status
