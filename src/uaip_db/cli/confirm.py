"""Confirmation before destructive steps; in production, also the database's name spelled out."""

from __future__ import annotations

import sys

from uaip_db.errors import AnsweredNo, NotConfirmed
from uaip_db.settings import DatabaseConfig


def confirm_destructive(
    config: DatabaseConfig, action: str, *, yes: bool, confirm_db: str | None
) -> None:
    """Go on only when the person said so: `--yes` (or a y at a terminal) outside production;
    `--yes --confirm-db NAME` matching the database when DB_ENV=production."""
    if config.is_production:
        if yes and confirm_db and confirm_db != config.name:
            raise NotConfirmed(
                f"--confirm-db {confirm_db} does not match {config.where()}; nothing was changed. "
                f"If you mean that database, run again with --yes --confirm-db {config.name}."
            )
        if not yes or confirm_db != config.name:
            raise NotConfirmed(
                f"Refusing to {action} {config.where()} in production. If you mean it, run "
                f"again with --yes --confirm-db {config.name}."
            )
        return
    if yes:
        return
    if sys.stdin.isatty():
        try:
            answer = input(f"This will {action} {config.where()}. Go on? [y/N] ").strip().lower()
        except EOFError:  # Ctrl-D
            answer = ""
        if answer in ("y", "yes"):
            return
        raise AnsweredNo("Stopped; nothing was changed.")
    raise NotConfirmed(
        f"This would {action} {config.where()}; run it again with --yes if you mean it."
    )
