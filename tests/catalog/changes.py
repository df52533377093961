"""The changes tests/catalog/test_coverage.py applies to a database at head: each alters how the
schema behaves (and the output of `pg_dump --schema-only --no-owner`), or, in UNCHANGED, leaves
it as it was. Backups tests restore a database holding them (tests/backups/test_restore.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tests.conftest import FREE_COLUMN, sql
from uaip_db import process
from uaip_db.servers.local import find_bindir
from uaip_db.settings import DatabaseConfig

ROLE = "{reader}"  # replaced by the `reader` fixture's role (roles belong to the whole server)


@dataclass(frozen=True)
class Change:
    statement: str
    named: tuple[str, ...]
    # Restored by another role that is no superuser (pg_restore --no-owner), the schema behaves
    # the same. Not so for what needs a superuser, for default privileges (pg_dump names the
    # role they are for) and for privileges the owner took from itself (the new owner has them).
    portable: bool = True


CHANGES = {
    "rule": Change(
        "CREATE RULE keep_sessions AS ON DELETE TO sessions DO INSTEAD NOTHING",
        ("rule sessions.keep_sessions: unexpected",),
    ),
    "row-level-security": Change(
        "ALTER TABLE sessions ENABLE ROW LEVEL SECURITY",
        ("table sessions: row_security (none) -> true",),
    ),
    "forced-row-security": Change(
        "ALTER TABLE stage_data FORCE ROW LEVEL SECURITY",
        ("table stage_data: force_row_security (none) -> true",),
    ),
    "policy": Change(
        f"CREATE POLICY own_sessions ON sessions AS RESTRICTIVE FOR UPDATE TO {ROLE} "
        "USING (user_id = current_user) WITH CHECK (status <> 'abandoned')",
        ("policy sessions.own_sessions: unexpected",),
    ),
    "fillfactor": Change(
        "ALTER TABLE sessions SET (fillfactor = 70)",
        ('table sessions: options (none) -> ["fillfactor=70"]',),
    ),
    "autovacuum-settings": Change(
        "ALTER TABLE stage_data SET (autovacuum_vacuum_scale_factor = 0.05, "
        "toast.autovacuum_enabled = false)",
        ("table stage_data: options differs",),
    ),
    "replica-identity-full": Change(
        "ALTER TABLE sessions REPLICA IDENTITY FULL",
        ("table sessions: replica_identity (none) -> full",),
    ),
    "replica-identity-index": Change(
        "ALTER TABLE project_charters REPLICA IDENTITY USING INDEX project_charters_session_id_key",
        (
            "table project_charters: replica_identity (none) -> "
            "using index project_charters_session_id_key",
        ),
    ),
    "grant-to-a-role": Change(
        f"GRANT SELECT, INSERT ON quality_metrics TO {ROLE}",
        ("table quality_metrics: privileges differs",),
    ),
    "revoke-from-public": Change(
        "REVOKE EXECUTE ON FUNCTION get_active_sessions_count() FROM PUBLIC",
        ('function get_active_sessions_count(): privileges (none) -> ["(owner): EXECUTE"]',),
    ),
    "owner-revokes-its-own": Change(
        "REVOKE TRUNCATE ON checkpoints FROM CURRENT_USER",
        ("table checkpoints: privileges differs",),
        portable=False,
    ),
    "column-grant": Change(
        f"GRANT UPDATE (status) ON sessions TO {ROLE}",
        (f'column sessions.status: privileges (none) -> ["{ROLE}: UPDATE"]',),
    ),
    "schema-public-grant": Change(
        "GRANT CREATE ON SCHEMA public TO PUBLIC", ("schema public: unexpected",)
    ),
    "default-privileges": Change(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {ROLE}",
        ("default privileges tables in public for (current role): unexpected",),
        portable=False,
    ),
    "trigger-always": Change(
        "ALTER TABLE sessions ENABLE ALWAYS TRIGGER trigger_update_sessions_timestamp",
        ("trigger sessions.trigger_update_sessions_timestamp: state enabled -> always",),
    ),
    "trigger-replica": Change(
        "ALTER TABLE stage_data ENABLE REPLICA TRIGGER trigger_update_stage_data_timestamp",
        ("trigger stage_data.trigger_update_stage_data_timestamp: state enabled -> replica only",),
    ),
    "statistics-target": Change(
        "ALTER TABLE sessions ALTER COLUMN user_id SET STATISTICS 500",
        ("column sessions.user_id: statistics (none) -> 500",),
    ),
    "storage": Change(
        "ALTER TABLE conversation_history ALTER COLUMN content SET STORAGE EXTERNAL",
        ("column conversation_history.content: storage (none) -> external",),
    ),
    "compression": Change(
        "ALTER TABLE checkpoints ALTER COLUMN checkpoint_data SET COMPRESSION pglz",
        ("column checkpoints.checkpoint_data: compression (none) -> pglz",),
    ),
    "n-distinct": Change(
        "ALTER TABLE stage_data ALTER COLUMN field_name SET (n_distinct = 100)",
        ('column stage_data.field_name: options (none) -> ["n_distinct=100"]',),
    ),
    "column-collation": Change(
        f'ALTER TABLE sessions ALTER COLUMN {FREE_COLUMN.name} TYPE {FREE_COLUMN.type} COLLATE "C"',
        (f"column sessions.{FREE_COLUMN.name}: collation (none) -> C",),
    ),
    "security-definer": Change(
        "ALTER FUNCTION mark_abandoned_sessions() SECURITY DEFINER",
        ("function mark_abandoned_sessions(): security_definer false -> true",),
    ),
    "function-search-path": Change(
        "ALTER FUNCTION mark_abandoned_sessions() SET search_path = public",
        ('function mark_abandoned_sessions(): settings (none) -> ["search_path=public"]',),
    ),
    "leakproof": Change(
        "ALTER FUNCTION get_active_sessions_count() LEAKPROOF",
        ("function get_active_sessions_count(): leakproof (none) -> true",),
        portable=False,
    ),
    "function-cost-and-rows": Change(
        "ALTER FUNCTION get_session_progress(uuid) COST 500 ROWS 5",
        (
            "function get_session_progress(uuid): cost (none) -> 500",
            "function get_session_progress(uuid): rows (none) -> 5",
        ),
    ),
    "deferrable-constraint": Change(
        "ALTER TABLE stage_data ALTER CONSTRAINT stage_data_session_id_fkey "
        "DEFERRABLE INITIALLY DEFERRED",
        (
            "constraint stage_data.stage_data_session_id_fkey: deferrable false -> true",
            "constraint stage_data.stage_data_session_id_fkey: definition differs",
            "constraint stage_data.stage_data_session_id_fkey: initially_deferred false -> true",
        ),
    ),
    "not-valid-constraint": Change(
        "ALTER TABLE checkpoints DROP CONSTRAINT checkpoints_stage_number_check, "
        "ADD CONSTRAINT checkpoints_stage_number_check CHECK (stage_number BETWEEN 1 AND 5) "
        "NOT VALID",
        (
            "constraint checkpoints.checkpoints_stage_number_check: definition differs",
            "constraint checkpoints.checkpoints_stage_number_check: validated (none) -> false",
        ),
    ),
    "cluster": Change(
        "CLUSTER sessions USING idx_sessions_user_id",
        ("index idx_sessions_user_id: clustered (none) -> true",),
    ),
    "index-fillfactor": Change(
        "ALTER INDEX idx_sessions_status SET (fillfactor = 50)",
        ("index idx_sessions_status: definition differs",),
    ),
    "extended-statistics": Change(
        "CREATE STATISTICS sessions_stage_status (dependencies) ON current_stage, status "
        "FROM sessions",
        ("statistics sessions_stage_status: unexpected",),
    ),
    "domain": Change(
        "CREATE DOMAIN stage AS integer CHECK (VALUE BETWEEN 1 AND 5)",
        ("domain stage: unexpected",),
    ),
    "event-trigger": Change(
        "CREATE FUNCTION note_ddl() RETURNS event_trigger LANGUAGE plpgsql "
        "AS $$ BEGIN END $$; "
        "CREATE EVENT TRIGGER note_ddl ON ddl_command_start EXECUTE FUNCTION note_ddl()",
        ("event trigger note_ddl: unexpected", "function note_ddl(): unexpected"),
        portable=False,
    ),
}

# Objects of kinds the schema at head does not have: made first, then changed.
ALTERATIONS = {
    "sequence-increment": (
        "CREATE SEQUENCE tickets",
        "ALTER SEQUENCE tickets INCREMENT BY 5",
        ["sequence tickets: increment 1 -> 5"],
    ),
    "sequence-grant": (
        "CREATE SEQUENCE tickets",
        f"GRANT USAGE ON SEQUENCE tickets TO {ROLE}",
        ["sequence tickets: privileges differs"],
    ),
    "sequence-unlogged": (
        "CREATE SEQUENCE tickets",
        "ALTER SEQUENCE tickets SET UNLOGGED",
        ["sequence tickets: persistence (none) -> unlogged"],
    ),
    "view-options": (
        "CREATE VIEW open_sessions AS SELECT * FROM sessions WHERE status = 'in_progress'",
        "ALTER VIEW open_sessions SET (security_barrier = true)",
        ['view open_sessions: options (none) -> ["security_barrier=true"]'],
    ),
    "view-column-default": (
        "CREATE VIEW open_sessions AS SELECT * FROM sessions WHERE status = 'in_progress'",
        "ALTER VIEW open_sessions ALTER COLUMN status SET DEFAULT 'in_progress'",
        [
            "view open_sessions: columns (none) -> "
            """{"status": {"default": "'in_progress'::character varying"}}"""
        ],
    ),
    "materialized-view-options": (
        "CREATE MATERIALIZED VIEW stage_counts AS SELECT stage_number, count(*) "
        "FROM stage_data GROUP BY stage_number",
        "ALTER MATERIALIZED VIEW stage_counts SET (fillfactor = 80)",
        ['materialized view stage_counts: options (none) -> ["fillfactor=80"]'],
    ),
    "policy-roles-and-using": (
        "CREATE POLICY own_sessions ON sessions FOR SELECT USING (user_id = current_user)",
        f"ALTER POLICY own_sessions ON sessions TO {ROLE}, CURRENT_USER USING (true)",
        [
            f'policy sessions.own_sessions: roles ["PUBLIC"] -> ["(owner)", "{ROLE}"]',
            "policy sessions.own_sessions: using ((user_id)::text = CURRENT_USER) -> true",
        ],
    ),
    "policy-with-check": (
        "CREATE POLICY own_sessions ON sessions FOR UPDATE USING (user_id = current_user)",
        "ALTER POLICY own_sessions ON sessions WITH CHECK (status <> 'abandoned')",
        [
            "policy sessions.own_sessions: with_check (none) -> "
            "((status)::text <> 'abandoned'::text)"
        ],
    ),
    "rule-disabled": (
        "CREATE RULE keep_sessions AS ON DELETE TO sessions DO INSTEAD NOTHING",
        "ALTER TABLE sessions DISABLE RULE keep_sessions",
        ["rule sessions.keep_sessions: state enabled -> disabled"],
    ),
    "expression-index-statistics": (
        "CREATE INDEX idx_sessions_lower_email ON sessions (lower(email))",
        "ALTER INDEX idx_sessions_lower_email ALTER COLUMN 1 SET STATISTICS 400",
        ['index idx_sessions_lower_email: statistics (none) -> {"1": 400}'],
    ),
    "partition-index-attached": (
        "CREATE TABLE events (at date, n int) PARTITION BY RANGE (at); "
        "CREATE TABLE events_2025 PARTITION OF events "
        "FOR VALUES FROM ('2025-01-01') TO ('2026-01-01'); "
        "CREATE INDEX events_2025_n ON events_2025 (n); CREATE INDEX events_n ON ONLY events (n)",
        "ALTER INDEX events_n ATTACH PARTITION events_2025_n",
        [
            "index events_2025_n: partition_of (none) -> events_n",
            "index events_n: valid false -> true",
        ],
    ),
    "extended-statistics-target": (
        "CREATE STATISTICS sessions_stage_status ON current_stage, status FROM sessions",
        "ALTER STATISTICS sessions_stage_status SET STATISTICS 300",
        ["statistics sessions_stage_status: statistics (none) -> 300"],
    ),
    "domain-constraint": (
        "CREATE DOMAIN stage AS integer CHECK (VALUE BETWEEN 1 AND 5)",
        "ALTER DOMAIN stage ADD CONSTRAINT stage_not_three CHECK (VALUE <> 3) NOT VALID",
        ["domain stage: constraints differs"],
    ),
    "type-privileges": (
        "CREATE TYPE mood AS ENUM ('calm', 'busy')",
        "REVOKE USAGE ON TYPE mood FROM PUBLIC",
        ['enum mood: privileges (none) -> ["(owner): USAGE"]'],
    ),
    "composite-type-attribute": (
        "CREATE TYPE answer AS (field text, value jsonb)",
        "ALTER TYPE answer ADD ATTRIBUTE note text",
        [
            'composite type answer: attributes ["field text", "value jsonb"] -> '
            '["field text", "value jsonb", "note text"]'
        ],
    ),
    "composite-type-comment": (
        "CREATE TYPE answer AS (field text, value jsonb)",
        "COMMENT ON COLUMN answer.field IS 'the questionnaire field'",
        [
            "composite type answer: attribute_comments (none) -> "
            '{"field": "the questionnaire field"}'
        ],
    ),
    "range-type": (
        "",
        "CREATE TYPE score_span AS RANGE (subtype = integer)",
        [
            "function score_span(integer, integer): unexpected",
            "function score_span(integer, integer, text): unexpected",
            "function score_span_multirange(): unexpected",
            "function score_span_multirange(score_span): unexpected",
            "function score_span_multirange(score_span[]): unexpected",
            "range type score_span: unexpected",
        ],
    ),
    "aggregate-initial-value": (
        "CREATE AGGREGATE total (integer) (sfunc = int4pl, stype = integer, initcond = '0')",
        "DROP AGGREGATE total (integer); "
        "CREATE AGGREGATE total (integer) (sfunc = int4pl, stype = integer, initcond = '1')",
        [
            "aggregate total(integer): aggregate sfunc=int4pl, stype=integer, initcond=0 -> "
            "sfunc=int4pl, stype=integer, initcond=1"
        ],
    ),
    "identity-generation": (
        "CREATE TABLE tickets (note text, n int GENERATED BY DEFAULT AS IDENTITY)",
        "ALTER TABLE tickets ALTER COLUMN n SET GENERATED ALWAYS",
        ["column tickets.n: identity by default -> always"],
    ),
    "default-privileges-of-another-role": (
        "",
        f"ALTER DEFAULT PRIVILEGES FOR ROLE {ROLE} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC",
        [f"default privileges functions for {ROLE}: unexpected"],
    ),
    "public-schema-comment-removed": (
        "",
        "COMMENT ON SCHEMA public IS NULL",
        ["schema public: unexpected"],
    ),
    "operator-collation-text-search": (
        "",
        "CREATE OPERATOR === (LEFTARG = integer, RIGHTARG = integer, FUNCTION = int4eq); "
        'CREATE COLLATION binary_order FROM "C"; '
        "CREATE TEXT SEARCH CONFIGURATION plain_english (COPY = english)",
        [
            "collation binary_order: unexpected",
            "operator ===(integer,integer): unexpected",
            "text search configuration plain_english: unexpected",
        ],
    ),
}

# Changes whose end state behaves as before: neither the fingerprint nor pg_dump sees them.
UNCHANGED = {
    "grant-then-revoke": (
        f"GRANT SELECT ON sessions TO {ROLE}; REVOKE SELECT ON sessions FROM {ROLE}"
    ),
    "column-grant-then-revoke": (
        f"GRANT UPDATE (status) ON sessions TO {ROLE}; "
        f"REVOKE UPDATE (status) ON sessions FROM {ROLE}"
    ),
    "revoke-then-grant": (
        "REVOKE EXECUTE ON FUNCTION get_active_sessions_count() FROM PUBLIC; "
        "GRANT EXECUTE ON FUNCTION get_active_sessions_count() TO PUBLIC"
    ),
    "options-reset": (
        "ALTER TABLE sessions SET (fillfactor = 70); ALTER TABLE sessions RESET (fillfactor)"
    ),
    "replica-identity-back": (
        "ALTER TABLE sessions REPLICA IDENTITY FULL; ALTER TABLE sessions REPLICA IDENTITY DEFAULT"
    ),
    "cluster-then-without": (
        "CLUSTER sessions USING idx_sessions_user_id; ALTER TABLE sessions SET WITHOUT CLUSTER"
    ),
    "statistics-back-to-default": (
        "ALTER TABLE sessions ALTER COLUMN user_id SET STATISTICS 500; "
        "ALTER TABLE sessions ALTER COLUMN user_id SET STATISTICS -1"
    ),
    "storage-back-to-the-type's": (
        "ALTER TABLE conversation_history ALTER COLUMN content SET STORAGE EXTERNAL; "
        "ALTER TABLE conversation_history ALTER COLUMN content SET STORAGE EXTENDED"
    ),
    "row-security-off-again": (
        "ALTER TABLE sessions ENABLE ROW LEVEL SECURITY; "
        "ALTER TABLE sessions DISABLE ROW LEVEL SECURITY"
    ),
    "default-cost": "ALTER FUNCTION get_active_sessions_count() COST 100",
    "default-privileges-undone": (
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {ROLE}; "
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT ON TABLES FROM {ROLE}"
    ),
    "another-owner": (
        f"ALTER TABLE checkpoints OWNER TO {ROLE}; "
        f"ALTER FUNCTION mark_abandoned_sessions() OWNER TO {ROLE}"
    ),
}


def with_role(text: str, role: str) -> str:
    return text.replace(ROLE, role)


def schema_dump(database: DatabaseConfig) -> str:
    """`pg_dump --schema-only --no-owner`, without the lines that carry a key made per run."""
    pg_dump = process.tool("pg_dump", find_bindir())
    result = process.run_tool(
        [pg_dump, "--schema-only", "--no-owner"], [database], what="dump the schema"
    )
    return "\n".join(
        line
        for line in result.stdout.splitlines()
        if not line.startswith(("\\restrict ", "\\unrestrict "))
    )


def apply_changes(database: DatabaseConfig, reader: str, *, portable_only: bool) -> None:
    for change in CHANGES.values():
        if change.portable or not portable_only:
            sql(database, with_role(change.statement, reader))
