"""Charging a writer's wait to the migration statement it waited behind (backups.load)."""

from __future__ import annotations

from uaip_db.backups.load import NOT_APPLIED, Wait, culprit
from uaip_db.migrations.lock_report import StatementLocks

LOCK = StatementLocks(
    "LOCK TABLE sessions IN ACCESS EXCLUSIVE MODE",
    ["AccessExclusiveLock on sessions"],
    started=100.0,
    held_seconds=2.5,
)
SHARE = StatementLocks(
    "CREATE INDEX ix ON sessions (user_id)", ["ShareLock on sessions"], started=103.0
)


def waiting(seconds: float, seen_at: float, relation: str = "sessions") -> Wait:
    return Wait(1, seconds, relation, seen_at, seen_at + 0.001, True, None)


def test_a_wait_seen_just_after_the_commit_that_ended_it_is_charged_to_the_lock() -> None:
    # Released at 102.5; the sample that saw the writers at their longest was read at 102.5004,
    # before they woke up. Seen from 102.5004 alone, no statement held the table then.
    recorded = [("r1", LOCK), ("r2", SHARE)]
    assert culprit(waiting(2.45, seen_at=LOCK.started + 2.5004), recorded) == ("r1", LOCK.statement)


def test_a_wait_goes_to_the_strongest_holder_and_only_one_that_overlaps_it() -> None:
    stronger = StatementLocks(
        "ALTER TABLE sessions ADD COLUMN x int", ["AccessExclusiveLock on sessions"], started=103.5
    )
    recorded = [("r1", LOCK), ("r2", SHARE), ("r2", stronger)]
    # Waiting from 103.2 to 104: SHARE and `stronger` held sessions, LOCK had let it go.
    assert culprit(waiting(0.8, seen_at=104.0), recorded) == ("r2", stronger.statement)
    # Waiting from 103.1 to 103.3, before `stronger` began: only SHARE held it.
    assert culprit(waiting(0.2, seen_at=103.3), recorded) == ("r2", SHARE.statement)


def test_a_wait_on_a_table_no_statement_locked_is_charged_to_what_ran() -> None:
    wait = Wait(1, 0.5, "stage_data", 101.0, 101.001, True, "SELECT pg_sleep(2.5)")
    assert culprit(wait, [("r1", LOCK)]) == (NOT_APPLIED, "SELECT pg_sleep(2.5)")


def test_a_wait_last_seen_with_no_blocker_left_stays_behind_the_migration() -> None:
    # Sampled behind the lock, then once more just after the commit that freed it: the writer
    # still shows as waiting, longer, its lock granted and no blocker left (CI saw the whole
    # wait filed as one behind other writers, and the lock charged with none).
    behind = Wait(7, 0.30, "sessions", 102.3, 102.301, True, LOCK.statement)
    freed = Wait(7, 0.43, None, 102.5004, 102.501, False, None)
    merged = freed.after(behind)
    assert (merged.seconds, merged.seen_to) == (0.43, 102.501)
    assert (merged.behind_migration, merged.relation) == (True, "sessions")
    assert merged.migration_query == LOCK.statement
    assert culprit(merged, [("r1", LOCK)]) == ("r1", LOCK.statement)
    # Never seen behind the migration: it stays a wait behind others, at its longest.
    other = Wait(8, 0.10, "sessions", 101.0, 101.001, False, None)
    alone = freed.after(other)
    assert (alone.seconds, alone.behind_migration) == (0.43, False)
