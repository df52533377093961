"""Reading rendered SQL back: statements, revisions, guards, and the digest the report shows."""

from __future__ import annotations

from tests.conftest import COMMENTS, EMAIL, HEAD, WIDEN
from uaip_db.migrations import runner
from uaip_db.release import sql as sqltext

GUARDED = """BEGIN;

-- Running downgrade b -> a

DO $g$
BEGIN
    IF (SELECT count(*) FROM t) > 0 THEN
        RAISE EXCEPTION 'it''s 100%% full; % rows', 3;
    END IF;
END
$g$;

COMMENT ON TABLE t IS 'a; b -- not a comment';

COMMENT ON COLUMN t.c IS NULL;

ALTER TABLE t ALTER COLUMN c TYPE VARCHAR(5);

UPDATE alembic_version SET version_num='a' WHERE alembic_version.version_num = 'b';

COMMIT;
"""


def test_statements_split_at_top_level_semicolons_only() -> None:
    found = sqltext.statements(GUARDED)
    assert found[0] == "BEGIN"
    assert found[1] == "-- Running downgrade b -> a"
    assert found[2].startswith("DO $g$") and found[2].endswith("$g$")
    assert found[3] == "COMMENT ON TABLE t IS 'a; b -- not a comment'"
    assert found[-1] == "COMMIT"


def test_steps_keep_each_revision_s_statements_without_bookkeeping() -> None:
    (step,) = sqltext.steps(GUARDED)
    assert (step.direction, step.start, step.end, step.revision) == ("downgrade", "b", "a", "b")
    assert len(step.statements) == 4
    assert step.guards() == ["it's 100% full; N rows"]


def test_the_digest_folds_comments_and_names_guards() -> None:
    (step,) = sqltext.steps(GUARDED)
    assert sqltext.digest(step) == [
        "  - guard (a DO block that stops here and changes nothing): it's 100% full; N rows",
        "  - 2 `COMMENT ON` statements (documentation only), the first: "
        "`COMMENT ON TABLE t IS 'a; b -- not a comment'`",
        "  - `ALTER TABLE t ALTER COLUMN c TYPE VARCHAR(5)`",
    ]


def test_the_real_chain_reads_back_revision_by_revision() -> None:
    upgrade = sqltext.steps(runner.render_sql(EMAIL, HEAD))
    assert [step.revision for step in upgrade][:2] == [WIDEN, COMMENTS]
    assert all(step.direction == "upgrade" for step in upgrade)
    downgrade = sqltext.steps(runner.render_sql(HEAD, EMAIL, downgrade=True))
    assert [step.revision for step in downgrade][-2:] == [COMMENTS, WIDEN]
    widen = downgrade[-1]
    assert widen.guards() == [
        "sessions.user_id has N value(s) longer than 255 characters; narrowing it would lose "
        "data. Shorten or remove them first, or restore a backup instead."
    ]
    assert sqltext.count(runner.render_sql(HEAD, EMAIL, downgrade=True)) == sum(
        len(step.statements) for step in downgrade
    )


def test_long_statements_are_shortened_to_one_line() -> None:
    line = sqltext.one_line("SELECT\n    " + "x, " * 100 + "y", limit=40)
    assert len(line) == 40 and line.endswith("...") and "\n" not in line


def test_a_do_block_that_writes_is_no_guard() -> None:
    """The backfill's offline loop raises when the table has no primary key, but it updates rows:
    the report called that RAISE a data guard."""
    backfill = (
        "DO $b$ BEGIN IF NOT FOUND THEN RAISE EXCEPTION 'backfill of %: no primary key', 't'; "
        "END IF; EXECUTE 'UPDATE t SET c = 1'; COMMIT; END $b$"
    )
    guard = (
        "DO $g$ BEGIN IF (SELECT count(*) FROM t) > 0 THEN "
        "RAISE EXCEPTION 'not empty: an update would lose it'; END IF; END $g$"
    )
    step = sqltext.Step("upgrade", "a", "b", [backfill, guard])
    assert step.guards() == ["not empty: an update would lose it"]
