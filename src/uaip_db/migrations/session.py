"""Many upgrades and downgrades on one throwaway database, with one connection and one load of
the scripts: the round trip and the snapshots run every revision up, down and up again."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from uaip_db.errors import UaipDbError
from uaip_db.migrations.applied import current_revisions_on
from uaip_db.migrations.failures import command_error, translate
from uaip_db.migrations.runner import alembic_config, make_engine
from uaip_db.settings import DatabaseConfig

if TYPE_CHECKING:
    import psycopg


class MigrationSession:
    """Many upgrades and downgrades on one database with one connection and one script load.

    `upgrade()`/`downgrade()` above load every revision file and open new connections on each
    call; a round trip makes three calls per revision, which would grow with the square of the
    number of revisions. This runs the same env.py (ledger, timeouts, one transaction per
    migration) on a connection handed in, with the scripts loaded once. For throwaway
    databases only: it takes no migration lock.
    """

    def __init__(self, database: DatabaseConfig) -> None:
        from alembic.script import ScriptDirectory  # noqa: PLC0415

        self.database = database
        self.config = alembic_config(database, lock_held=True)
        self.scripts = ScriptDirectory.from_config(self.config)
        self.engine = make_engine(database)
        self.connection = self.engine.connect()
        self.config.attributes["connection"] = self.connection

    def upgrade(self, revision: str) -> None:
        self._run(revision, upgrade=True)

    def start_from(self, parent: str) -> bool:
        """Leave `parent` the only head before its child is applied: with another branch's head
        applied too, a later downgrade to the parent would revert that branch as well. True when
        the database had to be moved."""
        if self.current() in ((parent,), ()):
            return False
        self.downgrade(parent)
        return True

    def current(self) -> tuple[str, ...]:
        """The revisions recorded, read on the session's own connection: a new connection for
        each revision's look was a third of a round trip's connections."""
        raw = cast("psycopg.Connection[Any]", self.connection.connection.driver_connection)
        try:
            return current_revisions_on(raw)
        finally:
            raw.rollback()  # outside any migration's transaction: the read's own, now ended

    def downgrade(self, revision: str) -> None:
        self._run(revision, upgrade=False)

    def _run(self, revision: str, *, upgrade: bool) -> None:
        from alembic.runtime.environment import EnvironmentContext  # noqa: PLC0415
        from alembic.util import CommandError  # noqa: PLC0415

        options = self.config.attributes["uaip_db"]
        options.direction = "upgrade" if upgrade else "downgrade"

        # The same step planning `alembic upgrade`/`downgrade` use (alembic.command).
        def steps(current: Any, _context: Any) -> Any:
            if upgrade:
                return self.scripts._upgrade_revs(revision, current)
            return self.scripts._downgrade_revs(revision, current)

        try:
            with EnvironmentContext(self.config, self.scripts, fn=steps, destination_rev=revision):
                self.scripts.run_env()
        except CommandError as error:
            raise command_error(error) from None
        except UaipDbError:
            raise
        except Exception as error:
            raise translate(error, self.database, options.direction) from error
        finally:
            if self.connection.in_transaction():
                self.connection.rollback()

    def close(self) -> None:
        self.connection.close()
        self.engine.dispose()

    def __enter__(self) -> MigrationSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
